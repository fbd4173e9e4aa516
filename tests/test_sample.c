/*
 * test_sample.c — the sampler: greedy, top-k/top-p/min-p exclusion, the
 * repetition penalty, seeded determinism, and the empirical distribution at
 * temperature 1 against softmax (chi-square, fixed seed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "starling.h"

static int quick(void) { return getenv("ST_TEST_QUICK") != NULL; }

static st_sampler *mk(float temp, int top_k, float top_p, float min_p, float pen, int last_n,
                      uint64_t seed, int vocab) {
    st_sampler_params p = st_sampler_default_params();
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repeat_penalty = pen;
    p.repeat_last_n = last_n;
    p.seed = seed;
    st_sampler *s = NULL;
    assert_int_equal(st_sampler_new(&p, vocab, &s), ST_OK);
    assert_non_null(s);
    return s;
}

/* sample from a copy (st_sample may modify its buffer) */
static int32_t draw(st_sampler *s, const float *logits, int n, float *buf) {
    memcpy(buf, logits, (size_t)n * sizeof(float));
    return st_sample(s, buf);
}

static void test_params_and_errors(void **state) {
    (void)state;
    st_sampler_params p = st_sampler_default_params();
    assert_true(p.repeat_penalty == 1.0f);
    assert_int_equal(p.repeat_last_n, 64);
    st_sampler *s = (st_sampler *)1;
    assert_int_equal(st_sampler_new(&p, 0, &s), ST_ERR_ARG);
    assert_null(s);
    assert_int_equal(st_sampler_new(NULL, 10, &s), ST_OK); /* NULL: defaults */
    st_sampler_accept(s, -1);                             /* ignored */
    st_sampler_accept(s, 10);
    st_sampler_free(s);
    st_sampler_free(NULL);
}

static void test_greedy(void **state) {
    (void)state;
    enum { V = 1000 };
    float l[V], buf[V];
    for (int i = 0; i < V; i++) l[i] = sinf((float)i * 0.37f);
    l[613] = 5.0f;
    st_sampler *s = mk(0.0f, 0, 1.0f, 0.0f, 1.0f, 64, 1, V);
    for (int r = 0; r < 5; r++) assert_int_equal(draw(s, l, V, buf), 613);
    l[17] = 5.0f; /* tie: lowest index */
    assert_int_equal(draw(s, l, V, buf), 17);
    l[20] = NAN; /* NaN never wins */
    assert_int_equal(draw(s, l, V, buf), 17);
    st_sampler_free(s);

    /* top_k = 1 equals greedy at any temperature and seed */
    l[17] = 0.0f;
    for (uint64_t seed = 0; seed < 20; seed++) {
        s = mk(1.5f, 1, 1.0f, 0.0f, 1.0f, 64, seed, V);
        assert_int_equal(draw(s, l, V, buf), 613);
        st_sampler_free(s);
    }
}

/* Empirical frequencies at temperature 1 (and 0.7) vs softmax(l/T). */
static void chi_square_case(float temp, int vocab_pad, int top_k, float top_p) {
    enum { K = 12 };
    const int V = K + vocab_pad, n = (quick() ? 30000 : 200000) / (vocab_pad ? 10 : 1);
    float *l = malloc(sizeof(float) * V), *buf = malloc(sizeof(float) * V);
    for (int i = 0; i < V; i++) l[i] = -INFINITY; /* padding never drawn */
    const float base[K] = {0.1f, 1.3f, -0.7f, 2.0f, 0.0f, -1.5f, 1.1f, 0.4f, -0.2f, 1.7f, -3.0f, 0.9f};
    for (int i = 0; i < K; i++) l[i * (vocab_pad / K + 1) % V] = base[i];
    double p[K], z = 0;
    for (int i = 0; i < K; i++) z += p[i] = exp(base[i] / temp);
    long cnt[K] = {0};
    st_sampler *s = mk(temp, top_k, top_p, 0.0f, 1.0f, 64, 42, V);
    for (int r = 0; r < n; r++) {
        int32_t t = draw(s, l, V, buf);
        int hit = -1;
        for (int i = 0; i < K; i++)
            if (t == i * (vocab_pad / K + 1) % V) hit = i;
        assert_true(hit >= 0);
        cnt[hit]++;
    }
    double chi2 = 0;
    for (int i = 0; i < K; i++) {
        double e = n * p[i] / z;
        chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
    }
    /* 11 degrees of freedom: P(chi2 > 31.26) = 0.001 */
    assert_true(chi2 < 31.26);
    st_sampler_free(s);
    free(l);
    free(buf);
}

static void test_distribution(void **state) {
    (void)state;
    chi_square_case(1.0f, 0, 0, 1.0f);
    chi_square_case(0.7f, 0, 0, 1.0f);
    chi_square_case(1.0f, 5000, 0, 1.0f);  /* -inf padding in a larger vocabulary */
    chi_square_case(1.0f, 5000, 12, 1.0f); /* through the top-k selection */
    chi_square_case(1.0f, 5000, 0, 1.0f - 1e-7f); /* through the bucketed top-p */
}

/* 8 tokens of probabilities 0.4 0.2 0.15 0.1 0.08 0.04 0.02 0.01 (sum 1). */
static const double P8[8] = {0.4, 0.2, 0.15, 0.1, 0.08, 0.04, 0.02, 0.01};

static void seen_set(float temp, int top_k, float top_p, float min_p, int *seen) {
    enum { V = 8 };
    float l[V], buf[V];
    const int perm[V] = {5, 0, 7, 2, 6, 1, 3, 4}; /* shuffle so index order != rank order */
    for (int i = 0; i < V; i++) l[perm[i]] = (float)log(P8[i]);
    st_sampler *s = mk(temp, top_k, top_p, min_p, 1.0f, 64, 7, V);
    memset(seen, 0, sizeof(int) * V);
    for (int r = 0; r < 20000; r++) {
        int32_t t = draw(s, l, V, buf);
        assert_true(t >= 0 && t < V);
        for (int i = 0; i < V; i++)
            if (perm[i] == t) seen[i]++;
    }
    st_sampler_free(s);
}

static void test_top_k_p_min_p(void **state) {
    (void)state;
    int seen[8];
    /* top-k = 3: ranks 0..2 only */
    seen_set(1.0f, 3, 1.0f, 0.0f, seen);
    for (int i = 0; i < 8; i++) assert_true(i < 3 ? seen[i] > 0 : seen[i] == 0);
    /* top-p = 0.7: 0.4+0.2 = 0.6 < 0.7 <= 0.75 -> ranks 0..2 */
    seen_set(1.0f, 0, 0.7f, 0.0f, seen);
    for (int i = 0; i < 8; i++) assert_true(i < 3 ? seen[i] > 0 : seen[i] == 0);
    /* top-p = 0.9: 0.85 < 0.9 <= 0.93 -> ranks 0..4 */
    seen_set(1.0f, 0, 0.9f, 0.0f, seen);
    for (int i = 0; i < 8; i++) assert_true(i < 5 ? seen[i] > 0 : seen[i] == 0);
    /* top-p after top-k renormalises: top-k 4 (mass 0.85); 0.8·0.85 = 0.68 -> ranks 0..2 */
    seen_set(1.0f, 4, 0.8f, 0.0f, seen);
    for (int i = 0; i < 8; i++) assert_true(i < 3 ? seen[i] > 0 : seen[i] == 0);
    /* min-p = 0.19 relative to 0.4: keep p >= 0.076 -> ranks 0..4 */
    seen_set(1.0f, 0, 1.0f, 0.19f, seen);
    for (int i = 0; i < 8; i++) assert_true(i < 5 ? seen[i] > 0 : seen[i] == 0);
    /* min-p = 0.3: keep p >= 0.12 -> ranks 0..2, with top-p 1 and top-k off */
    seen_set(1.0f, 0, 1.0f, 0.3f, seen);
    for (int i = 0; i < 8; i++) assert_true(i < 3 ? seen[i] > 0 : seen[i] == 0);
    /* top-p 0 keeps only the best */
    seen_set(1.0f, 0, 0.0f, 0.0f, seen);
    for (int i = 0; i < 8; i++) assert_true(i < 1 ? seen[i] > 0 : seen[i] == 0);
}

/* top-p without top-k over a big vocabulary (the bucketed path): the nucleus
 * can hold thousands of tokens (flat distribution). */
static void test_top_p_large_vocab(void **state) {
    (void)state;
    enum { V = 131072 };
    float *l = malloc(sizeof(float) * V), *buf = malloc(sizeof(float) * V);
    for (int i = 0; i < V; i++) l[i] = 0.0f;
    for (int i = 0; i < 3000; i++) l[(i * 7919) % V] = 10.0f; /* 3000 tokens hold ~all mass */
    int *hit = calloc(V, sizeof(int));
    st_sampler *s = mk(1.0f, 0, 0.5f, 0.0f, 1.0f, 64, 3, V);
    int n = quick() ? 50 : 200;
    for (int r = 0; r < n; r++) {
        int32_t t = draw(s, l, V, buf);
        assert_true(l[t] == 10.0f);
        hit[t]++;
    }
    /* the nucleus of 0.5 is the best-first prefix, ties by lower index: the
     * ceil(want) lowest indices among the 3000 tied tokens (weight 1 each) */
    int32_t tied[3000];
    int nt = 0;
    for (int i = 0; i < V && nt < 3000; i++)
        if (l[i] == 10.0f) tied[nt++] = i;
    const double total = 3000.0 + (V - 3000) * exp(-10.0), want = 0.5 * total;
    const int32_t last = tied[(int)ceil(want) - 1];
    int distinct = 0;
    for (int i = 0; i < V; i++) {
        distinct += hit[i] > 0;
        if (hit[i]) assert_true(i <= last);
    }
    assert_true(distinct > n / 4);
    st_sampler_free(s);
    free(hit);
    free(l);
    free(buf);
}

/* The bucketed top-p keeps exactly the smallest best-first prefix of a full
 * sort, on random logits with many near-ties. */
static const float *g_cmp_l;
static int cmp_rank(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_cmp_l[x] != g_cmp_l[y]) return g_cmp_l[x] > g_cmp_l[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static void test_top_p_matches_sort(void **state) {
    (void)state;
    enum { V = 3000 };
    static float l[V], buf[V];
    static int32_t order[V];
    uint64_t r = 12345;
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < V; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            l[i] = (float)((r >> 40) % 64) * 0.125f; /* coarse grid: many ties */
            order[i] = i;
        }
        const float temp = round % 2 ? 0.5f : 1.0f, top_p = 0.3f + 0.2f * (float)round;
        g_cmp_l = l;
        qsort(order, V, sizeof *order, cmp_rank);
        double total = 0, cum = 0;
        const float m = l[order[0]];
        for (int i = 0; i < V; i++) total += exp((l[i] - m) / temp);
        int keep = 0;
        while (keep < V) {
            cum += exp((l[order[keep++]] - m) / temp);
            if (cum >= top_p * total) break;
        }
        static char in[V];
        memset(in, 0, sizeof in);
        for (int i = 0; i < keep; i++) in[order[i]] = 1;
        st_sampler *s = mk(temp, 0, top_p, 0.0f, 1.0f, 64, 5 + round, V);
        const int n = quick() ? 300 : 2000;
        for (int k = 0; k < n; k++) assert_true(in[draw(s, l, V, buf)]);
        st_sampler_free(s);
    }
}

static void test_repetition_penalty(void **state) {
    (void)state;
    enum { V = 6 };
    float l[V] = {1.0f, 2.0f, 1.9f, -1.0f, -0.5f, 0.0f}, buf[V];
    st_sampler *s = mk(0.0f, 0, 1.0f, 0.0f, 1.5f, 4, 1, V);
    assert_int_equal(draw(s, l, V, buf), 1);
    st_sampler_accept(s, 1);
    st_sampler_accept(s, 1); /* repeated: still penalised once */
    memcpy(buf, l, sizeof l);
    assert_int_equal(st_sample(s, buf), 2); /* 2.0/1.5 = 1.33 < 1.9 */
    assert_true(fabsf(buf[1] - 2.0f / 1.5f) < 1e-6f);
    st_sampler_accept(s, 4);
    memcpy(buf, l, sizeof l);
    st_sample(s, buf);
    assert_true(fabsf(buf[4] - (-0.75f)) < 1e-6f); /* negative: multiplied */
    assert_true(buf[3] == -1.0f);                  /* not in the window */
    /* the window forgets: 4 newer tokens push token 1 out */
    for (int i = 0; i < 4; i++) st_sampler_accept(s, 5);
    assert_int_equal(draw(s, l, V, buf), 1);
    st_sampler_free(s);

    /* penalty off (1.0): no change */
    s = mk(0.0f, 0, 1.0f, 0.0f, 1.0f, 4, 1, V);
    st_sampler_accept(s, 1);
    assert_int_equal(draw(s, l, V, buf), 1);
    st_sampler_free(s);
}

static void test_seed_determinism(void **state) {
    (void)state;
    enum { V = 5000, N = 200 };
    float *l = malloc(sizeof(float) * V), *buf = malloc(sizeof(float) * V);
    for (int i = 0; i < V; i++) l[i] = 3.0f * sinf((float)i * 1.7f);
    int32_t a[N], b[N], c[N];
    st_sampler *s1 = mk(0.9f, 50, 0.95f, 0.02f, 1.1f, 16, 1234, V);
    st_sampler *s2 = mk(0.9f, 50, 0.95f, 0.02f, 1.1f, 16, 1234, V);
    st_sampler *s3 = mk(0.9f, 50, 0.95f, 0.02f, 1.1f, 16, 1235, V);
    for (int i = 0; i < N; i++) {
        a[i] = draw(s1, l, V, buf);
        st_sampler_accept(s1, a[i]);
        b[i] = draw(s2, l, V, buf);
        st_sampler_accept(s2, b[i]);
        c[i] = draw(s3, l, V, buf);
        st_sampler_accept(s3, c[i]);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, c, sizeof a) != 0);
    /* pinned first draws: the stream must not change across machines/builds */
    st_sampler *s4 = mk(1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 99, 10);
    float u[10] = {0};
    int32_t first[8];
    const int32_t pinned[8] = {3, 5, 3, 8, 7, 2, 2, 0}; /* splitmix64 -> xoshiro256**, seed 99 */
    for (int i = 0; i < 8; i++) first[i] = draw(s4, u, 10, buf);
    assert_memory_equal(first, pinned, sizeof pinned);
    st_sampler_free(s1);
    st_sampler_free(s2);
    st_sampler_free(s3);
    st_sampler_free(s4);
    free(l);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_and_errors),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_top_k_p_min_p),
        cmocka_unit_test(test_top_p_large_vocab),
        cmocka_unit_test(test_top_p_matches_sort),
        cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_seed_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
