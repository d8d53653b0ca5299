/*
 * The floor under any pcap reader: walk a classic pcap file's record
 * headers through a memory map and read the first bytes of every frame
 * (what sharding must read), nothing else. benches/peers.sh runs it beside
 * tapstream and the peers, so the figures say how far a tool is from the
 * cost of merely reading the capture on this machine.
 *
 *   read_floor FILE chain   follow the headers: each one is a cache miss
 *                           whose address depends on the one before
 *   read_floor FILE stream  also prefetch every line 16 KiB ahead (what
 *                           tapstream's reader does): bound by memory
 *                           bandwidth instead of latency
 *   read_floor FILE populate   stream, and fill the page tables 8 MiB
 *                              ahead with MADV_POPULATE_READ
 *   read_floor FILE hugepage   stream, the map advised MADV_HUGEPAGE
 *
 * Prints the packet count and a checksum of the bytes read (so the reads
 * cannot be optimised away). Little-endian microsecond or nanosecond pcap
 * only; anything else is refused. Page faults map the file (fault-around),
 * as for tapstream's reader.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define PREFETCH_DISTANCE (16 * 1024)

int main(int argc, char **argv) {
    const char *modes[] = {"chain", "stream", "populate", "hugepage"};
    int mode = -1;
    for (int i = 0; argc == 3 && i < 4; i++)
        if (strcmp(argv[2], modes[i]) == 0)
            mode = i;
    if (mode < 0) {
        fprintf(stderr, "usage: read_floor FILE chain|stream|populate|hugepage\n");
        return 2;
    }
    int stream = mode >= 1, populate = mode == 2;
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror(argv[1]);
        return 1;
    }
    size_t len = (size_t)st.st_size;
    if (len < 24) {
        fprintf(stderr, "%s: too short for a pcap header\n", argv[1]);
        return 1;
    }
    const uint8_t *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    if (mode == 3 && madvise((void *)p, len, MADV_HUGEPAGE) != 0)
        perror("madvise(MADV_HUGEPAGE)");
    uint32_t magic;
    memcpy(&magic, p, 4);
    if (magic != 0xa1b2c3d4 && magic != 0xa1b23c4d) {
        fprintf(stderr, "%s: not a little-endian pcap file\n", argv[1]);
        return 1;
    }
    size_t pos = 24, prefetched = 24, populated = 0;
    uint64_t packets = 0, sum = 0;
    while (pos + 16 <= len) {
        if (populate && populated < pos + (4 << 20)) {
            size_t end = populated + (8 << 20) < len ? populated + (8 << 20) : len;
            if (madvise((void *)(p + populated), end - populated, MADV_POPULATE_READ) != 0)
                populate = 0; /* kernel without it: faults do the work */
            populated = end;
        }
        if (stream) {
            size_t target = pos + PREFETCH_DISTANCE < len ? pos + PREFETCH_DISTANCE : len;
            if (prefetched < pos)
                prefetched = pos;
            for (; prefetched < target; prefetched += 64)
                __builtin_prefetch(p + prefetched);
        }
        uint32_t caplen;
        memcpy(&caplen, p + pos + 8, 4);
        if (pos + 16 + caplen > len)
            break;
        /* the EtherType and the IP protocol byte of an untagged IPv4 frame */
        if (caplen >= 24)
            sum += p[pos + 16 + 12] + p[pos + 16 + 23];
        pos += 16 + caplen;
        packets++;
    }
    printf("%llu packets, checksum %llu\n", (unsigned long long)packets, (unsigned long long)sum);
    return 0;
}
