/*
 * sample.c — token sampling: repetition penalty, temperature, top-k, top-p,
 * min-p, then a draw from a seeded xoshiro256** stream.
 *
 * Order (as the HF/transformers chain): penalty -> temperature -> top-k ->
 * top-p (over the top-k set, renormalised) -> min-p (relative to the most
 * likely token) -> draw. temperature <= 0 is greedy: the arg-max (lowest index
 * on ties) of the penalised logits; the repetition penalty applies there too
 * (it is off by default). With a 131072-token vocabulary nothing sorts the
 * whole vocabulary: top-k is a heap selection (O(V log k)), top-p without
 * top-k buckets the weights and sorts only the bucket where the mass crosses
 * top_p, and plain sampling walks the vocabulary in index order. All of it is
 * deterministic for a seed (xoshiro256** seeded through splitmix64).
 */
#include "starling.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ST_NB 1024           /* top-p buckets                                   */
#define ST_BUCKET_SPAN 32.0f /* they cover weights down to e^-32 of the best    */

struct st_sampler {
    st_sampler_params p;
    int vocab;
    uint64_t rng[4];    /* xoshiro256** state                                */
    int32_t *hist;      /* [cap] ring of the last accepted tokens             */
    int hist_cap, hist_n, hist_pos;
    uint32_t *mark;     /* [vocab] stamp: token already penalised this call   */
    uint32_t stamp;
    int32_t *cand;      /* [vocab] candidate token ids                        */
    float *prob;        /* [vocab] unnormalised probabilities of cand         */
    float *w;           /* [vocab] weight per token id (top-p buckets)        */
    struct vi_pair *pairs; /* [vocab] the bucket top-p crosses, to sort       */
    double *bmass;      /* [ST_NB] mass per bucket                            */
};

st_sampler_params st_sampler_default_params(void) {
    st_sampler_params p = {
        .temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
        .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0,
    };
    return p;
}

/* ------------------------------------------------------------ PRNG */

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    const uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* uniform in [0, 1) with 53 random bits */
static double uniform01(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

/* ------------------------------------------------------------ lifecycle */

st_status st_sampler_new(const st_sampler_params *p, int vocab_size, st_sampler **out) {
    *out = NULL;
    if (vocab_size <= 0) return st_err(ST_ERR_ARG, "sampler: vocabulary size %d", vocab_size);
    st_sampler *s = st_calloc(1, sizeof *s);
    if (!s) return ST_ERR_NOMEM;
    s->p = p ? *p : st_sampler_default_params();
    if (!(s->p.temperature == s->p.temperature)) s->p.temperature = 0.0f; /* NaN: greedy */
    if (!(s->p.temperature < INFINITY)) s->p.temperature = 1e30f; /* keep (l-m)/T finite */
    if (s->p.top_k < 0) s->p.top_k = 0;
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    s->vocab = vocab_size;
    s->hist_cap = s->p.repeat_last_n;
    uint64_t sm = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = st_splitmix64(&sm);
    s->mark = st_calloc((size_t)vocab_size, sizeof *s->mark);
    s->cand = st_malloc((size_t)vocab_size * sizeof *s->cand);
    s->prob = st_malloc((size_t)vocab_size * sizeof *s->prob);
    s->hist = st_malloc((size_t)(s->hist_cap > 0 ? s->hist_cap : 1) * sizeof *s->hist);
    s->w = st_malloc((size_t)vocab_size * sizeof *s->w);
    s->pairs = st_malloc((size_t)vocab_size * 8);
    s->bmass = st_malloc(ST_NB * sizeof *s->bmass);
    if (!s->mark || !s->cand || !s->prob || !s->hist || !s->w || !s->pairs || !s->bmass) {
        st_sampler_free(s);
        return ST_ERR_NOMEM;
    }
    *out = s;
    return ST_OK;
}

void st_sampler_free(st_sampler *s) {
    if (!s) return;
    free(s->hist);
    free(s->mark);
    free(s->cand);
    free(s->prob);
    free(s->w);
    free(s->pairs);
    free(s->bmass);
    free(s);
}

void st_sampler_accept(st_sampler *s, int32_t id) {
    if (!s || s->hist_cap <= 0 || id < 0 || id >= s->vocab) return;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % s->hist_cap;
    if (s->hist_n < s->hist_cap) s->hist_n++;
}

/* ------------------------------------------------------------ selection */

/* a ranks before b: larger value, then lower index (deterministic ties) */
static inline int better(const float *v, int32_t a, int32_t b) {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
}

static void sift_down(const float *v, int32_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, w = i;
        if (l < n && better(v, h[w], h[l])) w = l;       /* min-heap: root = worst */
        if (l + 1 < n && better(v, h[w], h[l + 1])) w = l + 1;
        if (w == i) return;
        int32_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* out[0..k) = the k best indices of v[0..n), best first. O(n log k). */
static void select_top(const float *v, int n, int k, int32_t *out) {
    for (int i = 0; i < k; i++) out[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(v, out, k, i);
    for (int i = k; i < n; i++)
        if (better(v, i, out[0])) {
            out[0] = i;
            sift_down(v, out, k, 0);
        }
    /* heap sort: move the current worst to the end each time */
    for (int end = k - 1; end > 0; end--) {
        int32_t t = out[0];
        out[0] = out[end];
        out[end] = t;
        sift_down(v, out, end, 0);
    }
}

/* ------------------------------------------------------------ sampling */

static void apply_penalty(st_sampler *s, float *logits) {
    const float pen = s->p.repeat_penalty;
    if (pen == 1.0f || !(pen > 0.0f) || s->hist_n == 0) return;
    if (++s->stamp == 0) { /* wrapped: clear stale stamps */
        memset(s->mark, 0, (size_t)s->vocab * sizeof *s->mark);
        s->stamp = 1;
    }
    for (int i = 0; i < s->hist_n; i++) {
        int32_t t = s->hist[i];
        if (s->mark[t] == s->stamp) continue; /* once per distinct token */
        s->mark[t] = s->stamp;
        logits[t] = logits[t] > 0.0f ? logits[t] / pen : logits[t] * pen;
    }
}

typedef struct vi_pair { float v; int32_t i; } vi_pair;

static int vi_cmp(const void *a, const void *b) {
    const vi_pair *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* Bucket index of a token from its distance below the best logit (in units of
 * temperature): ST_NB buckets over [0, ST_BUCKET_SPAN), the rest in the last. */
static inline int bucket_of(float l, float m, float inv_t) {
    const float d = (m - l) * inv_t; /* >= 0; +inf for -inf logits */
    return d < ST_BUCKET_SPAN ? (int)(d * (ST_NB / ST_BUCKET_SPAN)) : ST_NB - 1;
}

/* Top-p over the whole vocabulary without sorting it: bucket the weights by
 * their distance from the best logit, find the bucket where the best-first
 * mass crosses top_p, and sort only that bucket (ties: lower id first). The
 * kept set equals the smallest best-first prefix of a full sort. Returns the
 * candidate count in cand/prob. */
static int top_p_bucketed(st_sampler *s, const float *logits, float m, float inv_t, float top_p) {
    const int V = s->vocab;
    double *mass = s->bmass, total = 0.0;
    memset(mass, 0, ST_NB * sizeof *mass);
    for (int i = 0; i < V; i++) {
        const float w = expf((logits[i] - m) * inv_t);
        s->w[i] = w;
        mass[bucket_of(logits[i], m, inv_t)] += w;
        total += w;
    }
    const double want = (double)top_p * total;
    double cum = 0.0;
    int bstar = 0;
    while (bstar < ST_NB - 1 && cum + mass[bstar] < want) cum += mass[bstar++];

    int n = 0, nb = 0;
    for (int i = 0; i < V; i++) {
        const int b = bucket_of(logits[i], m, inv_t);
        if (b < bstar) {
            s->cand[n] = i;
            s->prob[n++] = s->w[i];
        } else if (b == bstar) {
            s->pairs[nb++] = (vi_pair){logits[i], i};
        }
    }
    qsort(s->pairs, (size_t)nb, sizeof *s->pairs, vi_cmp);
    for (int j = 0; j < nb && (cum < want || n == 0); j++) {
        const int32_t i = s->pairs[j].i;
        s->cand[n] = i;
        s->prob[n++] = s->w[i];
        cum += s->w[i];
    }
    return n;
}

/* The distribution st_sample draws from, left in s->cand / s->prob[0..n)
 * (unnormalised). Returns n; 0 when the draw is not random (greedy, top-k 1,
 * no finite logit, nothing past min-p): then *top is the token. */
static int dist(st_sampler *s, float *logits, int32_t *topp);

int32_t st_sample(st_sampler *s, float *logits) {
    int32_t top;
    const int n = dist(s, logits, &top);
    if (!n) return top;
    const int32_t *cand = s->cand;
    const float *prob = s->prob;
    double total = 0.0;
    for (int i = 0; i < n; i++) total += prob[i];
    const double u = uniform01(s->rng) * total;
    double cum = 0.0;
    int32_t last = top;
    for (int i = 0; i < n; i++) {
        if (prob[i] <= 0.0f) continue;
        cum += prob[i];
        last = cand[i];
        if (u < cum) return cand[i];
    }
    return last; /* rounding left u just past the end */
}

int st_sampler_dist(st_sampler *s, float *logits, int32_t *ids, float *probs) {
    int32_t top;
    const int n = dist(s, logits, &top);
    if (!n) {
        ids[0] = top;
        probs[0] = 1.0f;
        return 1;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += s->prob[i];
    for (int i = 0; i < n; i++) {
        ids[i] = s->cand[i];
        probs[i] = (float)(s->prob[i] / total);
    }
    return n;
}

double st_sampler_uniform(st_sampler *s) { return uniform01(s->rng); }

static int dist(st_sampler *s, float *logits, int32_t *topp) {
    const int V = s->vocab;
    apply_penalty(s, logits);
    int32_t top = 0;
    float m = -INFINITY;
    for (int i = 0; i < V; i++) {
        float v = logits[i];
        if (v != v) logits[i] = v = -INFINITY; /* NaN never wins and weighs 0 */
        if (v > m) {
            m = v;
            top = i;
        }
    }
    *topp = top;
    const int k = s->p.top_k > 0 && s->p.top_k < V ? s->p.top_k : V;
    if (s->p.temperature <= 0.0f || k == 1 || m == -INFINITY || m == INFINITY) return 0;

    /* weights exp((l - m)/T): the best token weighs 1, so min-p compares with 1 */
    const float inv_t = 1.0f / s->p.temperature, top_p = s->p.top_p, min_p = s->p.min_p;
    int32_t *cand = s->cand;
    float *prob = s->prob;
    int n;
    if (k < V) {
        select_top(logits, V, k, cand); /* best first */
        double total = 0.0;
        for (int i = 0; i < k; i++) total += prob[i] = expf((logits[cand[i]] - m) * inv_t);
        n = k;
        if (top_p < 1.0f) { /* smallest best-first prefix holding top_p of the top-k mass */
            const double want = (double)top_p * total;
            double cum = 0.0;
            int keep = 0;
            while (keep < n) {
                cum += prob[keep++];
                if (cum >= want) break;
            }
            n = keep > 0 ? keep : 1;
        }
    } else if (top_p < 1.0f) {
        n = top_p_bucketed(s, logits, m, inv_t, top_p);
    } else {
        for (int i = 0; i < V; i++) {
            cand[i] = i;
            prob[i] = expf((logits[i] - m) * inv_t);
        }
        n = V;
    }
    if (min_p > 0.0f) {
        int w = 0;
        for (int i = 0; i < n; i++)
            if (prob[i] >= min_p) {
                cand[w] = cand[i];
                prob[w++] = prob[i];
            }
        n = w;
        if (n == 0) return 0; /* min_p > 1: only the best can stay */
    }
    return n;
}
