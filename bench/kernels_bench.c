/*
 * kernels_bench.c — kernel micro-benchmark: memory read bandwidth, decode
 * mat-vec GB/s (BF16 64 MiB, 1 and 2 threads; NVFP4 of the same shape, GB/s of
 * codes + scales and weights/s), prefill GFLOP/s (2048x2048 BF16 and NVFP4, T=256) against an FMA-peak estimate, multi-span decode, sampling.
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc bench/kernels_bench.c \
 *      build/libstarling.a -ljansson -lpcre2-8 -lutf8proc -lm -o build/kernels_bench
 *   build/kernels_bench [--quick]
 */
#include "kernels/kernels.h"
#include "starling.h"
#include "util/util.h"

#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Noise check for shared machines: the share of all CPUs that *other*
 * processes used since the last call (busy time from /proc/stat minus ours). */
static double g_busy0, g_self0, g_wall0;
static double others_share(void) {
    unsigned long long u = 0, n = 0, s = 0, i = 0, w = 0, x = 0, y = 0, z = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &s, &i, &w, &x, &y, &z) != 8) {
        if (f) fclose(f);
        return 0.0;
    }
    fclose(f);
    const double busy = (double)(u + n + s + x + y + z) / (double)sysconf(_SC_CLK_TCK);
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    const double self = (double)r.ru_utime.tv_sec + 1e-6 * (double)r.ru_utime.tv_usec +
                        (double)r.ru_stime.tv_sec + 1e-6 * (double)r.ru_stime.tv_usec;
    const double wall = now();
    double share = 0.0;
    if (g_wall0 > 0 && wall > g_wall0)
        share = ((busy - g_busy0) - (self - g_self0)) / ((wall - g_wall0) * omp_get_num_procs());
    g_busy0 = busy;
    g_self0 = self;
    g_wall0 = wall;
    return share < 0 ? 0 : share;
}

static uint64_t g_rng = 88172645463325252ull;
static float rndf(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static void *make_weights(st_dtype dt, size_t n) {
    const size_t esz = st_dtype_size(dt);
    unsigned char *p = aligned_alloc(64, (n * esz + 63) & ~(size_t)63);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        uint64_t h = (i + 1) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
        float v = (float)((double)(h >> 11) * 0x1.0p-53 - 0.5);
        switch (dt) {
        case ST_DT_F32: memcpy(p + 4 * i, &v, 4); break;
        case ST_DT_BF16: { uint16_t b = st_f32_to_bf16(v); memcpy(p + 2 * i, &b, 2); break; }
        case ST_DT_F16: { uint16_t b = st_f32_to_f16(v); memcpy(p + 2 * i, &b, 2); break; }
        default: p[i] = (unsigned char)(h & 0x77); break; /* e4m3, no NaN */
        }
    }
    return p;
}

/* best time of reps runs of y = W x (all rows, the given column spans),
 * cycling through nw matrices of the same shape (nw > 1: none is still in
 * the last-level cache when its turn comes) */
static double time_matmul_n(const st_mat *W, int nw, const st_span *cs, int n_cs, int T, int reps) {
    st_span rs = {0, (int32_t)W->rows};
    int64_t K = 0;
    for (int i = 0; i < n_cs; i++) K += cs[i].len;
    float *x = malloc(sizeof(float) * (size_t)K * T), *y = malloc(sizeof(float) * (size_t)W->rows * T);
    for (int64_t i = 0; i < K * T; i++) x[i] = rndf();
    double best = 1e30;
    st_matmul(W, &rs, 1, cs, n_cs, x, (int)K, y, (int)W->rows, T, 0); /* warm-up */
    for (int r = 0; r < reps; r++) {
        const st_mat *Wr = &W[(r + 1) % nw];
        double t0 = now();
        st_matmul(Wr, &rs, 1, cs, n_cs, x, (int)K, y, (int)W->rows, T, 0);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    free(x);
    free(y);
    return best;
}

static double time_matmul(const st_mat *W, const st_span *cs, int n_cs, int T, int reps) {
    return time_matmul_n(W, 1, cs, n_cs, T, reps);
}

int main(int argc, char **argv) {
    const int quick = argc > 1 && !strcmp(argv[1], "--quick");
    const int reps = quick ? 3 : 10;
    printf("cpu: %s; kernels: %s; %d cores\n", st_cpu_features(), st_isa_name(st_isa_get()),
           omp_get_num_procs());
    printf("(\"others\": CPU share other processes took during a section; > 5%% = noisy numbers)\n");
    others_share();

    /* ---- memory read bandwidth */
    const size_t bw_bytes = (size_t)(quick ? 256 : 1024) << 20;
    double bw1 = st_measure_read_bandwidth(bw_bytes, 1), bw2 = st_measure_read_bandwidth(bw_bytes, 2);
    printf("\nmemory read bandwidth (%zu MiB): 1 thread %.1f GB/s, 2 threads %.1f GB/s  [others %.0f%%]\n",
           bw_bytes >> 20, bw1, bw2, 100 * others_share());

    /* ---- decode: T=1..3 over a 64 MiB matrix */
    printf("\ndecode  y = W x  (W 8192 x 4096 = 64 MiB in BF16, all rows and columns);\n"
           "  \"1 W\": the same matrix each time (part of it may stay in the L3),\n"
           "  \"4 W\": four such matrices in turn (every byte from DRAM)\n");
    printf("  %-8s %-3s %-3s %-4s %9s %8s %7s\n", "dtype", "thr", "T", "W", "ms", "GB/s", "%bw");
    const st_dtype dts[] = {ST_DT_BF16, ST_DT_F16, ST_DT_F8_E4M3, ST_DT_F32};
    for (int d = 0; d < 4; d++) {
        const st_dtype dt = dts[d];
        const int64_t R = 8192, C = 4096;
        const int nw = dt == ST_DT_BF16 ? 4 : 1;
        st_mat W[4];
        for (int i = 0; i < nw; i++)
            W[i] = (st_mat){.dt = dt, .data = make_weights(dt, (size_t)(R * C)), .rows = R, .cols = C,
                            .scale = 1.0f};
        st_span cs = {0, (int32_t)C};
        const double bytes = (double)R * C * st_dtype_size(dt);
        for (int th = 1; th <= 2; th++) {
            st_set_threads(th);
            for (int T = 1; T <= (dt == ST_DT_BF16 ? 3 : 1); T++)
                for (int w = 1; w <= nw; w += 3) {
                    double t = time_matmul_n(W, w, &cs, 1, T, reps * 2);
                    printf("  %-8s %-3d %-3d %-4d %9.3f %8.1f %6.0f%%  [others %.0f%%]\n", st_dtype_name(dt),
                           th, T, w, t * 1e3, bytes / t * 1e-9,
                           100 * bytes / t * 1e-9 / (th == 1 ? bw1 : bw2), 100 * others_share());
                }
        }
        for (int i = 0; i < nw; i++) free((void *)W[i].data);
    }

    /* ---- NVFP4 decode: same shape; bytes = codes + block scales */
    {
        const int64_t R = 8192, C = 4096;
        const size_t nc = (size_t)(R * C / 2), ns = (size_t)(R * C / 16);
        const int nw = 4;
        st_mat W[4];
        for (int i = 0; i < nw; i++) {
            unsigned char *p = aligned_alloc(64, nc + ns);
            if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
#pragma omp parallel for schedule(static)
            for (size_t j = 0; j < nc + ns; j++) {
                uint64_t h = (j + 1 + (size_t)i * 7919) * 0x9e3779b97f4a7c15ull;
                h ^= h >> 29;
                /* codes: any byte; scales: e4m3 in [2^-4, 2^3] */
                p[j] = j < nc ? (unsigned char)(h >> 8) : (unsigned char)(0x18 + (h >> 8) % 0x30);
            }
            W[i] = (st_mat){.dt = ST_DT_NVFP4, .data = p, .rows = R, .cols = C, .scale = 0.01f, .bscale = p + nc};
        }
        st_span cs = {0, (int32_t)C};
        const double bytes = (double)(nc + ns), welems = (double)R * C;
        printf("\ndecode NVFP4, W 8192 x 4096 (%.1f MiB codes + scales; BF16 above: 64 MiB)\n", bytes / 1048576);
        printf("  %-3s %-3s %-4s %9s %8s %7s %10s\n", "thr", "T", "W", "ms", "GB/s", "%bw", "Gweights/s");
        for (int th = 1; th <= 2; th++) {
            st_set_threads(th);
            for (int T = 1; T <= 3; T++)
                for (int w = 1; w <= nw; w += 3) {
                    double t = time_matmul_n(W, w, &cs, 1, T, reps * 2);
                    printf("  %-3d %-3d %-4d %9.3f %8.1f %6.0f%% %10.2f  [others %.0f%%]\n", th, T, w, t * 1e3,
                           bytes / t * 1e-9, 100 * bytes / t * 1e-9 / (th == 1 ? bw1 : bw2), welems / t * 1e-9,
                           100 * others_share());
                }
        }
        /* prefill on a 2048 x 2048 slice of the first matrix (rows 0..2047, columns 0..2047) */
        {
            st_mat Ws = W[0];
            Ws.rows = 2048;
            st_span c2 = {0, 2048};
            const st_isa top = st_isa_get();
            printf("prefill NVFP4 2048 x 2048 (columns 0..2047 of the 4096-wide rows), GFLOP/s\n");
            for (int th = 1; th <= 2; th++) {
                st_set_threads(th);
                printf("  %s %d thr:", st_isa_name(top), th);
                const int Ts[] = {16, 64, 256};
                for (int i = 0; i < 3; i++) {
                    if (quick && Ts[i] != 256) continue;
                    double t = time_matmul(&Ws, &c2, 1, Ts[i], reps);
                    printf("  T=%d %.0f", Ts[i], 2.0 * 2048 * 2048 * Ts[i] / t * 1e-9);
                }
                printf("  [others %.0f%%]\n", 100 * others_share());
            }
        }
        for (int i = 0; i < nw; i++) free((void *)W[i].data);
    }

    /* ---- decode with many column spans (Mamba out_proj at a per-group head cut) */
    {
        const int64_t R = 2688, C = 4096;
        void *w = make_weights(ST_DT_BF16, (size_t)(R * C));
        st_mat W = {.dt = ST_DT_BF16, .data = w, .rows = R, .cols = C, .scale = 1.0f};
        st_span cs[64];
        for (int h = 0; h < 64; h++) cs[h] = (st_span){h * 64, 48}; /* 48 of each 64 */
        st_span full = {0, (int32_t)C};
        printf("\ndecode, W 2688 x 4096 BF16 (22 MB), 64 column spans of 48 vs one span\n");
        for (int th = 1; th <= 2; th++) {
            st_set_threads(th);
            double t1 = time_matmul(&W, cs, 64, 1, reps * 5), t2 = time_matmul(&W, &full, 1, 1, reps * 5);
            printf("  %d thr: 64 spans %.3f ms (%.1f GB/s of used weights), 1 span %.3f ms (%.1f GB/s)  [others %.0f%%]\n",
                   th, t1 * 1e3, R * 64 * 48 * 2.0 / t1 * 1e-9, t2 * 1e3, R * C * 2.0 / t2 * 1e-9,
                   100 * others_share());
        }
        free(w);
    }

    /* ---- prefill: 2048 x 2048 BF16, T = 256 */
    {
        const int64_t R = 2048, C = 2048;
        void *w = make_weights(ST_DT_BF16, (size_t)(R * C));
        st_mat W = {.dt = ST_DT_BF16, .data = w, .rows = R, .cols = C, .scale = 1.0f};
        st_span cs = {0, (int32_t)C};
        printf("\nprefill y = W x, W 2048 x 2048 BF16, GFLOP/s (2·R·C·T flops)\n");
        const st_isa top = st_isa_get();
        for (int isa = top; isa >= ST_ISA_AVX2; isa--) {
            st_isa_set((st_isa)isa);
            for (int th = 1; th <= 2; th++) {
                st_set_threads(th);
                const int Ts[] = {16, 48, 64, 128, 256, 512};
                double gf[6] = {0};
                for (int i = 0; i < 6; i++) {
                    if (quick && Ts[i] != 256) continue;
                    double t = time_matmul(&W, &cs, 1, Ts[i], reps);
                    gf[i] = 2.0 * R * C * Ts[i] / t * 1e-9;
                }
                const double others = others_share(), peak = st_measure_fma_gflops(th);
                printf("  %-6s %d thr: peak (FMA loop) %.0f GFLOP/s;", st_isa_name((st_isa)isa), th, peak);
                for (int i = 0; i < 6; i++)
                    if (gf[i] > 0) printf("  T=%d %.0f (%.0f%%)", Ts[i], gf[i], 100 * gf[i] / peak);
                printf("  [others %.0f%%]\n", 100 * others);
            }
        }
        st_isa_set(top);
        free(w);
    }

    /* ---- sampling over a 131072-token vocabulary */
    {
        const int V = 131072;
        float *l = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
        for (int i = 0; i < V; i++) l[i] = 4.0f * rndf() + (i % 97 == 0 ? 6.0f : 0.0f);
        struct { float t; int k; float p, mp; const char *name; } c[] = {
            {0.0f, 0, 1.0f, 0.0f, "greedy"},
            {0.8f, 40, 0.95f, 0.05f, "T0.8 k40 p0.95 minp0.05"},
            {1.0f, 0, 1.0f, 0.0f, "T1 plain"},
            {1.0f, 0, 0.95f, 0.0f, "T1 p0.95"},
        };
        printf("\nsampling, vocab %d (ms per token, including a 512 KiB copy)\n", V);
        for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
            st_sampler_params p = st_sampler_default_params();
            p.temperature = c[i].t;
            p.top_k = c[i].k;
            p.top_p = c[i].p;
            p.min_p = c[i].mp;
            st_sampler *s;
            if (st_sampler_new(&p, V, &s) != ST_OK) return 1;
            double t0 = now();
            for (int r = 0; r < 100; r++) {
                memcpy(b, l, sizeof(float) * V);
                st_sample(s, b);
            }
            printf("  %-26s %.3f\n", c[i].name, (now() - t0) / 100 * 1e3);
            st_sampler_free(s);
        }
        free(l);
        free(b);
    }
    return 0;
}
