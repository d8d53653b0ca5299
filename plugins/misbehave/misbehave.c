/*
 * Misbehaving plugins for the sandbox tests, one per build flag:
 *   -DLOOP   loops forever in its batch handler (stopped by the deadline)
 *   -DHOG    grows its memory without end (stopped by the memory cap)
 *   -DTRAP   traps (unreachable) on every batch
 *   -DBADABI reports ABI version 99 (refused at load)
 * and two that behave, for the hot-reload test:
 *   -DCOUNT  counts records into `records_seen`
 *   -DCOUNT2 counts records into `records_seen_v2` (the "new version")
 * Every variant counts the records it was given before misbehaving, so a
 * test can see it ran.
 */
#include "tapstream.h"

#if defined(LOOP) || defined(HOG)
static volatile uint64_t sink;
#endif

static int32_t on_batch(uint32_t kind, const uint8_t *base, int32_t count, int32_t bytes) {
    (void)base;
    (void)bytes;
#if defined(COUNT2)
    ts_counter_add("records_seen_v2", 15, count);
#else
    ts_counter_add("records_seen", 12, count);
#endif
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
