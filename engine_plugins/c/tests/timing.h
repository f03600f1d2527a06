/* timing.h: the C tests' timing of frame-path calls (e2e_test.c, cuda_e2e_test.c). Each call is
 * timed and its thread's context switches during it counted (getrusage(RUSAGE_THREAD), outside the
 * timed span): `waits` (voluntary: the thread blocked, which a frame-path call must never do) and
 * `preempted` (involuntary: the scheduler took the core, which says nothing about the library). A
 * report line: "TIMING <call> n= p50_us= p99_us= max_us= waits= preempted= p99_unpreempted_us=",
 * the last over the calls that kept their core. */
#ifndef SS_TESTS_TIMING_H
#define SS_TESTS_TIMING_H
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "streamstyle.h"

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

typedef struct timing {
    const char *name;
    double *us, *kept; /* every call's time; the times of those that kept their core */
    size_t n, n_kept, cap;
    long waits, preempted; /* the calls' voluntary and involuntary context switches */
} timing;

/* A call's start: its thread's context switches so far, then the clock (so the getrusage
 * system call stays outside the timed span). */
typedef struct mark {
    struct rusage ru;
    double t0;
} mark;

static mark begin(void) {
    mark m;
    getrusage(RUSAGE_THREAD, &m.ru);
    m.t0 = now_us();
    return m;
}

static void record(timing *t, const mark *m) {
    double us = now_us() - m->t0;
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    t->waits += ru.ru_nvcsw - m->ru.ru_nvcsw;
    t->preempted += ru.ru_nivcsw - m->ru.ru_nivcsw;
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1024;
        t->us = realloc(t->us, t->cap * sizeof *t->us);
        t->kept = realloc(t->kept, t->cap * sizeof *t->kept);
    }
    t->us[t->n++] = us;
    if (ru.ru_nivcsw == m->ru.ru_nivcsw) t->kept[t->n_kept++] = us;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(timing *t) {
    double p50, p99, max;
    if (!t->n) {
        printf("TIMING %s n=0 waits=0 preempted=0\n", t->name);
        return;
    }
    qsort(t->us, t->n, sizeof *t->us, cmp_double);
    qsort(t->kept, t->n_kept, sizeof *t->kept, cmp_double);
    p50 = t->us[t->n / 2];
    p99 = t->us[(size_t)(t->n * 0.99)];
    max = t->us[t->n - 1];
    printf("TIMING %s n=%zu p50_us=%.2f p99_us=%.2f max_us=%.2f waits=%ld preempted=%ld p99_unpreempted_us=%.2f\n",
           t->name, t->n, p50, p99, max, t->waits, t->preempted, t->n_kept ? t->kept[(size_t)(t->n_kept * 0.99)] : 0.0);
    free(t->us);
    free(t->kept);
    t->us = t->kept = NULL;
    t->n = t->n_kept = t->cap = 0;
    t->waits = t->preempted = 0;
}

/* the frame-path calls, timed */
static timing T_ACQUIRE = {"acquire", 0, 0, 0, 0, 0, 0, 0}, T_SUBMIT = {"submit", 0, 0, 0, 0, 0, 0, 0},
              T_POLL = {"poll", 0, 0, 0, 0, 0, 0, 0}, T_OUTPUT = {"output", 0, 0, 0, 0, 0, 0, 0};

static ss_status timed_acquire(ss_session *s, ss_slot *slot) {
    mark m = begin();
    ss_status st = ss_acquire(s, NULL, slot);
    record(&T_ACQUIRE, &m);
    return st;
}

static ss_status timed_submit(ss_session *s, uint32_t slot, const ss_frame_info *info, uint64_t *seq) {
    mark m = begin();
    ss_status st = ss_submit(s, slot, info, NULL, seq);
    record(&T_SUBMIT, &m);
    return st;
}

static ss_status timed_poll(ss_session *s, ss_event *ev) {
    mark m = begin();
    ss_status st = ss_poll(s, ev);
    record(&T_POLL, &m);
    return st;
}

static ss_status timed_output(ss_session *s, uint32_t slot, const void **p, uint64_t *n) {
    mark m = begin();
    ss_status st = ss_output(s, slot, NULL, p, n);
    record(&T_OUTPUT, &m);
    return st;
}

/* every frame-path call's report, in one go */
static void report_calls(void) {
    report(&T_ACQUIRE);
    report(&T_SUBMIT);
    report(&T_POLL);
    report(&T_OUTPUT);
}

#endif
