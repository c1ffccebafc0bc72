/* fsync_probe.c -- the disk's durable-write ceiling, measured beside the ingest benchmark.
 *
 *   cc -O2 -o fsync_probe fsync_probe.c
 *   ./fsync_probe DIR [OPS] [MAX_SECONDS]
 *
 * One writer, 4 KiB per operation, three patterns, each bounded by OPS operations
 * (default 1000) and MAX_SECONDS seconds (default 5):
 *   journal  : pwrite into one preallocated file at a rotating offset, fdatasync
 *              (what a group-commit journal pays per batch: no metadata change)
 *   append   : write to an O_APPEND file, fdatasync (the file grows: a journal commit)
 *   newfile  : create a new file, write, fsync, close (one queue file per message)
 * Output, one line per pattern: "PATTERN ops=N ops_per_s=R p50_us=A p99_us=B".
 * Every file it creates is removed before it exits.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define JOURNAL_BLOCKS 256

static char block[BLOCK];

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fail(const char *what, const char *path) {
    fprintf(stderr, "fsync_probe: %s %s: ", what, path);
    perror(NULL);
    exit(1);
}

/* One operation of PATTERN number i; returns 0 on success. */
static int one_op(const char *pattern, const char *dir, int fd, int i) {
    char path[4096];
    if (strcmp(pattern, "journal") == 0) {
        off_t at = (off_t)(i % JOURNAL_BLOCKS) * BLOCK;
        if (pwrite(fd, block, BLOCK, at) != BLOCK) return -1;
        return fdatasync(fd);
    }
    if (strcmp(pattern, "append") == 0) {
        if (write(fd, block, BLOCK) != BLOCK) return -1;
        return fdatasync(fd);
    }
    snprintf(path, sizeof path, "%s/new.%d", dir, i);
    int f = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (f < 0) return -1;
    int rc = (write(f, block, BLOCK) == BLOCK && fsync(f) == 0) ? 0 : -1;
    close(f);
    return rc;
}

static void run(const char *pattern, const char *dir, int ops, double max_s) {
    char path[4096];
    int fd = -1;
    double *lat = calloc((size_t)ops, sizeof *lat);
    if (!lat) fail("calloc", "");
    if (strcmp(pattern, "journal") == 0) {
        snprintf(path, sizeof path, "%s/journal", dir);
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0) fail("open", path);
        for (int b = 0; b < JOURNAL_BLOCKS; b++)
            if (write(fd, block, BLOCK) != BLOCK) fail("preallocate", path);
        if (fsync(fd) != 0) fail("fsync", path);
    } else if (strcmp(pattern, "append") == 0) {
        snprintf(path, sizeof path, "%s/append", dir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
        if (fd < 0) fail("open", path);
    }
    int n = 0;
    double start = seconds();
    while (n < ops && seconds() - start < max_s) {
        double t0 = seconds();
        if (one_op(pattern, dir, fd, n) != 0) fail(pattern, dir);
        lat[n++] = seconds() - t0;
    }
    double total = seconds() - start;
    if (fd >= 0) close(fd);
    if (strcmp(pattern, "newfile") == 0) {
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/new.%d", dir, i);
            unlink(path);
        }
    } else {
        unlink(path);
    }
    qsort(lat, (size_t)n, sizeof *lat, by_value);
    printf("%-8s ops=%d ops_per_s=%.0f p50_us=%.0f p99_us=%.0f\n", pattern, n, n / total,
           lat[n / 2] * 1e6, lat[(n * 99) / 100] * 1e6);
    fflush(stdout);
    free(lat);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [OPS] [MAX_SECONDS]\n", argv[0]);
        return 2;
    }
    int ops = argc > 2 ? atoi(argv[2]) : 1000;
    double max_s = argc > 3 ? atof(argv[3]) : 5.0;
    if (ops < 10 || ops > 1000000 || max_s <= 0 || max_s > 600) {
        fprintf(stderr, "fsync_probe: OPS must be 10..1000000, MAX_SECONDS 0..600\n");
        return 2;
    }
    memset(block, 'x', sizeof block);
    run("journal", argv[1], ops, max_s);
    run("append", argv[1], ops, max_s);
    run("newfile", argv[1], ops, max_s);
    return 0;
}
