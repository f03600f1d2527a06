/* The doorbell's segment and lanes: see doorbell.h and interop/doorbell.py (the format's home). */
#define _GNU_SOURCE
#include "doorbell.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdlib.h>

#include "streamstyle_contract.h"

static const size_t LANE_OFFSET[SS_BELL_LANE_OFFSET_COUNT] = {SS_BELL_LANE_OFFSET_LIST};

struct ss_bell {
    char name[64];
    unsigned char *base;
    uint64_t known_consumed[2]; /* per lane, the writer's: its reader's `consumed` when last read */
};

static uint64_t *counter(const ss_bell *b, int lane, int consumed) {
    return (uint64_t *)(void *)(b->base + LANE_OFFSET[lane] + (consumed ? SS_BELL_CONSUMED_OFFSET : 0));
}

static unsigned char *record(const ss_bell *b, int lane, uint64_t i) {
    return b->base + SS_BELL_RECORDS_OFFSET + ((size_t)lane * SS_BELL_RECORDS + (size_t)(i % SS_BELL_RECORDS)) *
                                                   SS_BELL_RECORD_BYTES;
}

ss_bell *ss_bell_create(void) {
    static unsigned counter_ = 0;
    ss_bell *b = calloc(1, sizeof *b);
    uint32_t header[5] = {SS_BELL_MAGIC, SS_BELL_VERSION, SS_BELL_RECORD_BYTES, SS_BELL_RECORDS, 0};
    int fd = -1;
    if (!b) return NULL;
    for (int tries = 0; tries < 16 && fd < 0; tries++) {
        unsigned n = __atomic_add_fetch(&counter_, 1, __ATOMIC_RELAXED);
        snprintf(b->name, sizeof b->name, "streamstyle-bell-%ld-%u", (long)getpid(), n);
        char path[72];
        snprintf(path, sizeof path, "/%s", b->name);
        fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    }
    if (fd < 0) goto fail;
    if (ftruncate(fd, SS_BELL_SEGMENT_BYTES) != 0) goto fail_fd;
    b->base = mmap(NULL, SS_BELL_SEGMENT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (b->base == MAP_FAILED) {
        b->base = NULL;
        goto fail_fd;
    }
    close(fd);
    header[4] = (uint32_t)getpid();
    memset(b->base, 0, SS_BELL_RECORDS_OFFSET); /* ftruncate zeroed it; said for the reader */
    memcpy(b->base, header, sizeof header);     /* little-endian hosts only (the contract's byte order) */
    return b;
fail_fd: {
        int e = errno;
        char path[72];
        close(fd);
        snprintf(path, sizeof path, "/%s", b->name);
        shm_unlink(path);
        errno = e;
    }
fail:
    free(b);
    return NULL;
}

void ss_bell_destroy(ss_bell *b) {
    char path[72];
    if (!b) return;
    if (b->base) munmap(b->base, SS_BELL_SEGMENT_BYTES);
    snprintf(path, sizeof path, "/%s", b->name);
    shm_unlink(path);
    free(b);
}

const char *ss_bell_name(const ss_bell *b) { return b->name; }

int ss_bell_push(ss_bell *b, int lane, const void *data, size_t size) {
    uint64_t *pub = counter(b, lane, 0), *con = counter(b, lane, 1);
    uint64_t p = __atomic_load_n(pub, __ATOMIC_RELAXED), c = b->known_consumed[lane];
    unsigned char *r;
    uint32_t n = (uint32_t)size;
    /* `consumed` is read only when what was last read of it leaves the lane looking full: its line
     * is the reader's, rewritten while it spins, and a read of it costs a miss to the other core */
    if (p - c >= SS_BELL_RECORDS) c = b->known_consumed[lane] = __atomic_load_n(con, __ATOMIC_ACQUIRE);
    if (p - c >= SS_BELL_RECORDS || size > SS_BELL_RECORD_BYTES - 4) return 0;
    r = record(b, lane, p);
    memcpy(r + 4, data, size);
    memcpy(r, &n, 4);
    __atomic_store_n(pub, p + 1, __ATOMIC_RELEASE);
    return 1;
}

void ss_bell_prefetch(const ss_bell *b, int lane, size_t bytes) {
    const unsigned char *r = record(b, lane, __atomic_load_n(counter(b, lane, 0), __ATOMIC_RELAXED));
    if (bytes > SS_BELL_RECORD_BYTES) bytes = SS_BELL_RECORD_BYTES;
#if defined(__x86_64__)
    __asm__ volatile("prefetchw (%0)" ::"r"(counter(b, lane, 0)));
    for (size_t o = 0; o < bytes; o += 64) __asm__ volatile("prefetchw (%0)" ::"r"(r + o));
#else
    __builtin_prefetch(counter(b, lane, 0), 1);
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(r + o, 1);
#endif
}

uint64_t ss_bell_watched_until(const ss_bell *b, int lane) {
    const uint64_t *w = (const uint64_t *)(const void *)((const unsigned char *)counter(b, lane, 1) + SS_BELL_WATCH_OFFSET);
    return __atomic_load_n(w, __ATOMIC_ACQUIRE);
}

int ss_bell_pending(const ss_bell *b, int lane) {
    return __atomic_load_n(counter(b, lane, 0), __ATOMIC_ACQUIRE) != __atomic_load_n(counter(b, lane, 1), __ATOMIC_RELAXED);
}

long ss_bell_pop(ss_bell *b, int lane, char *out, size_t cap) {
    uint64_t *pub = counter(b, lane, 0), *con = counter(b, lane, 1);
    uint64_t p = __atomic_load_n(pub, __ATOMIC_ACQUIRE), c = __atomic_load_n(con, __ATOMIC_RELAXED);
    const unsigned char *r;
    uint32_t n;
    long got;
    if (c >= p) return 0;
    r = record(b, lane, c);
    memcpy(&n, r, 4);
    if (n > SS_BELL_RECORD_BYTES - 4 || n > cap) {
        got = -1;
    } else {
        memcpy(out, r + 4, n);
        got = (long)n;
    }
    __atomic_store_n(con, c + 1, __ATOMIC_RELEASE);
    return got;
}
