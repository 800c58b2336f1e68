/* load_report — veil-load's figures: percentiles, the key=value file (--kv), and
 * what /proc says of another process (CPU time, resident memory, open descriptors). */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "veil_load.h"

static FILE *g_kv;

int vl_kv_open(const char *path)
{
    return (g_kv = fopen(path, "w")) ? 0 : -1;
}

void vl_kv_close(void)
{
    if (g_kv)
        fclose(g_kv);
    g_kv = NULL;
}

void vl_kv(const char *key, const char *fmt, ...)
{
    if (!g_kv)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(g_kv, "%s=", key);
    vfprintf(g_kv, fmt, ap);
    fputc('\n', g_kv);
    va_end(ap);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void vl_sort_ttfc(kind_stats *s)
{
    qsort(s->ttfc_ms, s->n_ttfc, sizeof s->ttfc_ms[0], cmp_double);
}

double vl_pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    return v[k ? k - 1 : 0];
}

void vl_print_ttfc(const char *what, const kind_stats *s, const char *kvp)
{
    double p50 = vl_pct(s->ttfc_ms, s->n_ttfc, 50), p95 = vl_pct(s->ttfc_ms, s->n_ttfc, 95),
           p99 = vl_pct(s->ttfc_ms, s->n_ttfc, 99);
    printf("  %-30s p50 %8.2f ms   p95 %8.2f ms   p99 %8.2f ms   (n=%zu)\n", what, p50, p95, p99, s->n_ttfc);
    char k[96];
    snprintf(k, sizeof k, "%s_ttfc_p50_ms", kvp);
    vl_kv(k, "%.3f", p50);
    snprintf(k, sizeof k, "%s_ttfc_p95_ms", kvp);
    vl_kv(k, "%.3f", p95);
    snprintf(k, sizeof k, "%s_ttfc_p99_ms", kvp);
    vl_kv(k, "%.3f", p99);
}

double vl_proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    /* after ')': state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

long vl_proc_rss_kb(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

long vl_proc_fds(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

double vl_self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}
