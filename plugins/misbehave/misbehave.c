/*
 * Misbehaving plugins for the sandbox tests, one per build flag:
 *   -DLOOP   loops forever in its batch handler (stopped by the deadline)
 *   -DHOG    grows its memory without end (stopped by the memory cap)
 *   -DTRAP   traps (unreachable) on every batch
 *   -DBADABI reports ABI version 99 (refused at load)
 * Every variant counts the records it was given before misbehaving, so a
 * test can see it ran.
 */
#include "tapstream.h"

static volatile uint64_t sink;

static int32_t on_batch(uint32_t kind, const uint8_t *base, int32_t count, int32_t bytes) {
    (void)base;
    (void)bytes;
    ts_counter_add("records_seen", 12, count);
#if defined(LOOP)
    for (;;) sink += kind;
#elif defined(HOG)
    for (;;) {
        if (__builtin_wasm_memory_grow(0, 16) == (size_t)-1) sink++;
    }
#elif defined(TRAP)
    if (count > 0) __builtin_trap();
#endif
    return 0;
}

#if defined(BADABI)
static uint8_t buf[TS_BUFFER_BYTES];
TS_EXPORT("tapstream_abi") int32_t tapstream_abi(void) { return 99; }
TS_EXPORT("tapstream_buffer") int32_t tapstream_buffer(int32_t min) { (void)min; return (int32_t)(uintptr_t)buf; }
TS_EXPORT("tapstream_batch") int32_t tapstream_batch(int32_t kind, int32_t ptr, int32_t count, int32_t bytes) {
    (void)ptr;
    return on_batch((uint32_t)kind, buf, count, bytes);
}
#else
TS_PLUGIN(on_batch)
#endif
