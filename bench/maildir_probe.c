/* maildir_probe.c -- how fast this disk makes new Maildir-style files durable, by strategy.
 *
 *   cc -O2 -pthread -o maildir_probe maildir_probe.c
 *   ./maildir_probe DIR MODE BATCH THREADS FILES
 *
 * Each file is what sendmail-rs's Maildir delivery writes per message: an unnamed file
 * (O_TMPFILE) in DIR, 5,200 bytes, made durable, then linked in under a name; DIR is
 * fsynced after each BATCH files of a thread. THREADS threads share FILES files. MODE:
 *   0  per file: write, fsync, link (the daemon's way, one delivery per thread)
 *   1  per batch: write all, sync_file_range(SYNC_FILE_RANGE_WRITE) all, fsync each, link all
 *   2  as 1 without sync_file_range
 *   3  as 1 with fdatasync instead of fsync
 * Output: "mode=M batch=B threads=T files=N rate=R/s". DIR is created, and every file it
 * made is removed (with DIR) before it exits. Figures are in src/deliver/local/batch.rs.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 1024
#define MAX_THREADS 256
#define MAX_FILES 100000

static char body[5200];
static int dir_fd, mode, batch, threads, files;
static int next_name;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) { perror(what); exit(1); }

static int make(void) {
    int fd = openat(dir_fd, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, 0600);
    if (fd < 0) die("open O_TMPFILE");
    if (write(fd, body, sizeof body) != (ssize_t)sizeof body) die("write");
    return fd;
}

static void link_in(int fd) {
    char proc[64], name[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    snprintf(name, sizeof name, "m%d", __sync_fetch_and_add(&next_name, 1));
    if (linkat(AT_FDCWD, proc, dir_fd, name, AT_SYMLINK_FOLLOW)) die("linkat");
    close(fd);
}

static void *work(void *unused) {
    (void)unused;
    int fds[MAX_BATCH], per = files / threads;
    for (int done = 0; done < per; done += batch) {
        int n = per - done < batch ? per - done : batch;
        if (mode == 0) {
            for (int i = 0; i < n; i++) {
                int fd = make();
                if (fsync(fd)) die("fsync");
                link_in(fd);
            }
        } else {
            for (int i = 0; i < n; i++) fds[i] = make();
            if (mode != 2)
                for (int i = 0; i < n; i++) sync_file_range(fds[i], 0, 0, SYNC_FILE_RANGE_WRITE);
            for (int i = 0; i < n; i++)
                if ((mode == 3 ? fdatasync(fds[i]) : fsync(fds[i]))) die("fsync");
            for (int i = 0; i < n; i++) link_in(fds[i]);
        }
        if (fsync(dir_fd)) die("fsync dir");
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s DIR MODE BATCH THREADS FILES\n", argv[0]);
        return 2;
    }
    mode = atoi(argv[2]), batch = atoi(argv[3]), threads = atoi(argv[4]), files = atoi(argv[5]);
    if (mode < 0 || mode > 3 || batch < 1 || batch > MAX_BATCH || threads < 1 ||
        threads > MAX_THREADS || files < threads || files > MAX_FILES) {
        fprintf(stderr, "MODE 0..3, BATCH 1..%d, THREADS 1..%d, FILES THREADS..%d\n",
                MAX_BATCH, MAX_THREADS, MAX_FILES);
        return 2;
    }
    memset(body, 'x', sizeof body);
    if (mkdir(argv[1], 0700)) die("mkdir DIR");
    dir_fd = open(argv[1], O_RDONLY | O_DIRECTORY);
    if (dir_fd < 0) die("open DIR");
    pthread_t t[MAX_THREADS];
    double t0 = now();
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double t1 = now();
    int made = next_name;
    printf("mode=%d batch=%d threads=%d files=%d rate=%.0f/s\n", mode, batch, threads, made,
           made / (t1 - t0));
    for (int i = 0; i < made; i++) {
        char name[64];
        snprintf(name, sizeof name, "m%d", i);
        unlinkat(dir_fd, name, 0);
    }
    rmdir(argv[1]);
    return 0;
}
