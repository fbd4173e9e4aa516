/*
 * test_schema.c — the tensor schema (src/model/schema.h) against the models
 * built from it: every tensor of a synthetic model (every layer type) is in
 * the schema exactly once with the shape the schema gives, the sizes add up
 * to the file's bytes, names parse back to their spec, and the training
 * table lists the same tensors. Fused 3-D experts ([E][out][in] per layer,
 * as some exports store them) bind, slice along the expert dim and export to
 * GGUF and load for training exactly as the per-expert tensors they stack.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elastic/gguf_export.h"
#include "elastic/slice.h"
#include "model/model.h"
#include "model/schema.h"
#include "model/synth.h"
#include "starling.h"
#include "train/train.h"
#include "util_test.h"

static char *g_dir;      /* the synthetic model: split experts */
static char *g_fused;    /* the same weights, experts fused     */

/* ------------------------------------------------------------ walk */

typedef struct {
    const st_model *m;
    int n;
    uint64_t bytes;
    char **names;
    int cap;
} walk;

static st_status collect(void *ctx, const st_tspec *s, int l, int e) {
    walk *w = ctx;
    const st_config *c = st_model_config(w->m);
    char nm[256];
    st_tspec_name(s, l, e, nm, sizeof nm);
    const st_sf_tensor *t = st_model_tensor(w->m, nm);
    if (!t) fail_msg("schema tensor %s is not in the model", nm);
    int64_t sh[3];
    int nd = st_tspec_shape(s, c, NULL, 1, sh);
    assert_int_equal(nd, t->ndim);
    for (int i = 0; i < nd; i++) assert_int_equal(sh[i], t->shape[i]);
    assert_int_equal(st_tspec_numel(s, c, NULL, 1), st_sf_numel(t));
    /* dtype rule: F32 specs are F32 in a synthesised checkpoint, the rest BF16 */
    assert_int_equal(t->dt, s->dtype == ST_DTR_F32 ? ST_DT_F32 : ST_DT_BF16);
    /* the name parses back to this spec, layer and expert */
    int pl, pe;
    assert_ptr_equal(st_schema_find(c, nm, &pl, &pe), s);
    assert_int_equal(pl, l);
    assert_int_equal(pe, e);
    w->bytes += (uint64_t)st_sf_numel(t) * st_dtype_size(t->dt);
    if (w->n < w->cap) w->names[w->n] = strdup(nm);
    w->n++;
    return ST_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_synth_in_schema(void **st) {
    (void)st;
    st_model *m;
    if (st_model_load(g_dir, &m)) fail_msg("load: %s", st_last_error());
    int nt = 0;
    uint64_t bytes = 0;
    for (int f = 0; f < m->n_files; f++) {
        nt += m->files[f]->n_tensors;
        for (int i = 0; i < m->files[f]->n_tensors; i++) bytes += m->files[f]->tensors[i].end - m->files[f]->tensors[i].begin;
    }
    walk w = {.m = m, .cap = nt, .names = calloc((size_t)nt, sizeof(char *))};
    assert_int_equal(st_schema_foreach(&m->cfg, ST_SCHEMA_BY_EXPERT, collect, &w), ST_OK);
    printf("  %d tensors, %llu bytes\n", w.n, (unsigned long long)w.bytes);
    assert_int_equal(w.n, nt);       /* every file tensor is a schema tensor ...   */
    assert_int_equal(w.bytes, bytes); /* ... and the sizes add up to the file       */
    qsort(w.names, (size_t)w.n, sizeof *w.names, cmp_str);
    for (int i = 1; i < w.n; i++) /* ... exactly once */
        if (!strcmp(w.names[i - 1], w.names[i])) fail_msg("%s listed twice", w.names[i]);
    for (int i = 0; i < w.n; i++) free(w.names[i]);
    free(w.names);
    /* names that are no model tensor */
    int l, e;
    assert_null(st_schema_find(&m->cfg, "backbone.layers.0.mixer.q_proj.weight", &l, &e)); /* layer 0 is Mamba */
    assert_null(st_schema_find(&m->cfg, "backbone.layers.1.mixer.experts.8.up_proj.weight", &l, &e)); /* 8 experts */
    assert_null(st_schema_find(&m->cfg, "backbone.layers.99.norm.weight", &l, &e));
    assert_null(st_schema_find(&m->cfg, "backbone.layers.0.mixer.in_proj.weight_scale", &l, &e));
    const st_tspec *s = st_schema_find(&m->cfg, "backbone.layers.1.mixer.experts.down_proj", &l, &e);
    assert_non_null(s);
    assert_int_equal(s->id, ST_T_EXP_DOWN);
    assert_int_equal(e, -1); /* the fused stack */
    st_model_free(m);
}

/* The training table is the schema, experts tensor by tensor. */
typedef struct {
    const st_tmodel *tm;
    int n;
} twalk;

static st_status tnames(void *ctx, const st_tspec *s, int l, int e) {
    twalk *w = ctx;
    char nm[256];
    const st_tmodel *tm = w->tm;
    assert_true(w->n < tm->n_p);
    assert_string_equal(tm->p[w->n].name, st_tspec_name(s, l, e, nm, sizeof nm));
    assert_int_equal(tm->p[w->n].decay, (s->flags & ST_TS_MAT) != 0);
    if (e <= 0) assert_int_equal(st_tmodel_index(tm, s, l), w->n);
    w->n++;
    return ST_OK;
}

static void test_train_table(void **st) {
    (void)st;
    st_model *m;
    if (st_model_load(g_dir, &m)) fail_msg("load: %s", st_last_error());
    st_tmodel *tm;
    assert_int_equal(st_tmodel_new(st_model_config(m), &tm), ST_OK);
    twalk w = {.tm = tm};
    assert_int_equal(st_schema_foreach(&tm->cfg, ST_SCHEMA_BY_TENSOR, tnames, &w), ST_OK);
    assert_int_equal(w.n, tm->n_p);
    st_tmodel_free(tm);
    st_model_free(m);
}

/* Budget sizes: every dim at a budget's widths is what the budget keeps. */
static void test_dim_sizes(void **st) {
    (void)st;
    st_model *m;
    if (st_model_load(g_dir, &m)) fail_msg("load: %s", st_last_error());
    st_budget *b;
    assert_int_equal(st_budget_by_name(m, "S", &b), ST_OK);
    const st_config *c = &m->cfg;
    const st_widths *w = st_budget_widths(b);
    assert_int_equal(st_dim_size(c, w, ST_DIM_MAMBA_INPROJ), b->m_inproj_n);
    assert_int_equal(st_dim_size(c, w, ST_DIM_MAMBA_CHANNEL), b->m_din);
    assert_int_equal(st_dim_size(c, w, ST_DIM_Q_HEAD), (int64_t)b->a_qk * c->num_key_value_heads * c->head_dim);
    st_dim part[5];
    int np = st_dim_parts(ST_DIM_MAMBA_INPROJ, part);
    int64_t sum = 0;
    for (int i = 0; i < np; i++) sum += st_dim_size(c, NULL, part[i]);
    assert_int_equal(sum, st_dim_size(c, NULL, ST_DIM_MAMBA_INPROJ));
    st_budget_free(b);
    st_model_free(m);
}

/* ------------------------------------------------------------ fused experts */

/* g_dir's files with each MoE layer's experts fused into
 * "...experts.up_proj" / "...experts.down_proj.weight" [E][out][in]. */
static void write_fused(const char *src, const char *dst) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp -r '%s'/. '%s'/ && rm '%s'/model.safetensors", src, dst, dst);
    assert_int_equal(system(cmd), 0);
    st_model *m;
    if (st_model_load(src, &m)) fail_msg("load: %s", st_last_error());
    const st_config *c = &m->cfg;
    const int E = c->n_routed_experts;
    st_sf_file *f = m->files[0];
    st_sf_writer *w;
    assert_int_equal(st_sf_writer_new(&w), ST_OK);
    /* pass 0 declares, pass 1 writes, in the source's order with each stack at its expert 0 */
    for (int pass = 0; pass < 2; pass++) {
        if (pass) {
            char p[700];
            snprintf(p, sizeof p, "%s/model.safetensors", dst);
            assert_int_equal(st_sf_writer_begin(w, p), ST_OK);
        }
        for (int i = 0; i < f->n_tensors; i++) {
            const st_sf_tensor *t = &f->tensors[i];
            int l, e;
            const st_tspec *s = st_schema_find(c, t->name, &l, &e);
            if (!s || !(s->flags & ST_TS_EXPERTS)) {
                if (!pass) assert_int_equal(st_sf_writer_add(w, t->name, t->dt, t->ndim, t->shape), ST_OK);
                else assert_int_equal(st_sf_writer_write(w, t->data, (size_t)(t->end - t->begin)), ST_OK);
                continue;
            }
            if (e) continue;
            char nm[256];
            /* one with ".weight", one without: both forms are read */
            st_tspec_fused_name(s, l, s->id == ST_T_EXP_DOWN, nm, sizeof nm);
            if (!pass) {
                int64_t sh[3];
                st_tspec_shape(s, c, NULL, 0, sh);
                assert_int_equal(st_sf_writer_add(w, nm, t->dt, 3, sh), ST_OK);
                continue;
            }
            for (int x = 0; x < E; x++) {
                char en[256];
                const st_sf_tensor *te = st_model_tensor(m, st_tspec_name(s, l, x, en, sizeof en));
                assert_non_null(te);
                assert_int_equal(st_sf_writer_write(w, te->data, (size_t)(te->end - te->begin)), ST_OK);
            }
        }
    }
    assert_int_equal(st_sf_writer_finish(w), ST_OK);
    st_sf_writer_free(w);
    st_model_free(m);
}

static const int32_t g_tok[] = {10, 137, 150, 47, 258, 157, 189, 236, 187, 12, 76, 133};
#define NTOK ((int)(sizeof g_tok / sizeof g_tok[0]))

static float *logits(const char *dir, const char *budget, size_t *n) {
    st_model *m;
    if (st_model_load(dir, &m)) fail_msg("load %s: %s", dir, st_last_error());
    st_budget *b;
    if (st_budget_resolve(m, budget, &b)) fail_msg("budget %s: %s", budget, st_last_error());
    st_state *s;
    assert_int_equal(st_state_new(m, 0, &s), ST_OK);
    *n = (size_t)NTOK * (size_t)m->cfg.vocab_size;
    float *out = malloc(sizeof(float) * *n);
    if (st_forward(b, s, g_tok, NTOK, out, 1)) fail_msg("forward: %s", st_last_error());
    st_state_free(s);
    st_budget_free(b);
    st_model_free(m);
    return out;
}

static char *slice_to(const char *src, const char *budget, const char *name) {
    st_model *m;
    if (st_model_load(src, &m)) fail_msg("load %s: %s", src, st_last_error());
    st_budget *b;
    if (st_budget_resolve(m, budget, &b)) fail_msg("budget: %s", st_last_error());
    char *dst = malloc(700);
    snprintf(dst, 700, "%s/%s", src, name);
    if (st_slice(m, b, dst, NULL)) fail_msg("slice %s: %s", src, st_last_error());
    st_budget_free(b);
    st_model_free(m);
    return dst;
}

/* Equal up to summation order: the BF16 kernels peel a row's head to the
 * next cache line, so the same row at another address (one expert of a
 * stack vs its own tensor) sums in another order. */
static void same_logits(const char *a, const char *ba, const char *b, const char *bb) {
    size_t na, nb;
    float *x = logits(a, ba, &na), *y = logits(b, bb, &nb);
    assert_int_equal(na, nb);
    double e = rel_err(y, x, na);
    printf("  %s@%s vs %s@%s: rel err %.2e\n", strrchr(a, '/') + 1, ba, strrchr(b, '/') + 1, bb, e);
    if (!(e <= 1e-5)) fail_msg("%s@%s and %s@%s differ: rel err %.3e", a, ba, b, bb, e);
    free(x);
    free(y);
}

static void test_fused_experts(void **st) {
    (void)st;
    /* binding: the fused copy computes what the split one does */
    same_logits(g_dir, "full", g_fused, "full");
    same_logits(g_dir, "M", g_fused, "M");
    /* slicing: along the expert dim and the expert neurons, kept fused */
    const char *budget = "M:moe_intermediate_size=40";
    char *ss = slice_to(g_dir, budget, "slice-split"), *sf = slice_to(g_fused, budget, "slice-fused");
    st_model *m;
    assert_int_equal(st_model_load(sf, &m), ST_OK);
    const st_config *c = &m->cfg;
    const st_sf_tensor *t = st_model_tensor(m, "backbone.layers.1.mixer.experts.up_proj");
    assert_non_null(t);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[0], c->n_routed_experts);
    assert_int_equal(t->shape[1], 40);
    assert_int_equal(t->shape[2], c->hidden_size);
    assert_non_null(st_model_tensor(m, "backbone.layers.1.mixer.experts.down_proj.weight"));
    assert_null(st_model_tensor(m, "backbone.layers.1.mixer.experts.0.up_proj.weight"));
    printf("  fused slice: %d experts of %lld neurons\n", c->n_routed_experts, (long long)t->shape[1]);
    st_model_free(m);
    same_logits(ss, "full", sf, "full");
    same_logits(g_fused, budget, sf, "full"); /* the budget's view, as test_slice checks for split experts */
    /* GGUF: a fused stack is already ggml's ffn_*_exps, the files are equal */
    char ga[800], gb[800];
    snprintf(ga, sizeof ga, "%s.gguf", ss);
    snprintf(gb, sizeof gb, "%s.gguf", sf);
    st_gguf_export_opts o = {.precision = "f32"};
    st_model *ms, *mf;
    assert_int_equal(st_model_load(ss, &ms), ST_OK);
    assert_int_equal(st_model_load(sf, &mf), ST_OK);
    if (st_gguf_export(ms, ga, &o)) fail_msg("gguf: %s", st_last_error());
    if (st_gguf_export(mf, gb, &o)) fail_msg("gguf fused: %s", st_last_error());
    st_model_free(ms);
    st_model_free(mf);
    char cmd[1800];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", ga, gb);
    assert_int_equal(system(cmd), 0);
    free(ss);
    free(sf);
}

/* Training (and so ranking) reads a fused stack expert by expert. */
static void test_fused_train(void **st) {
    (void)st;
    st_model *ms, *mf;
    assert_int_equal(st_model_load(g_dir, &ms), ST_OK);
    assert_int_equal(st_model_load(g_fused, &mf), ST_OK);
    st_tmodel *a, *b;
    assert_int_equal(st_tmodel_new(&ms->cfg, &a), ST_OK);
    assert_int_equal(st_tmodel_new(&mf->cfg, &b), ST_OK);
    if (st_tmodel_from_model(a, ms)) fail_msg("split: %s", st_last_error());
    if (st_tmodel_from_model(b, mf)) fail_msg("fused: %s", st_last_error());
    assert_int_equal(a->n_p, b->n_p);
    for (int i = 0; i < a->n_p; i++) /* tensor by tensor: the padding between them is never written */
        assert_memory_equal(st_tw(a, i), st_tw(b, i), a->p[i].numel * sizeof(float));
    st_tmodel_free(a);
    st_tmodel_free(b);
    st_model_free(ms);
    st_model_free(mf);
}

static void test_fused_errors(void **st) {
    (void)st;
    /* a stack of another shape than the config implies is named */
    char *d = test_tmpdir("schema-bad");
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cp -r '%s'/. '%s'/ && sed -i 's/\"moe_intermediate_size\": 64/\"moe_intermediate_size\": 32/' '%s'/config.json",
             g_fused, d, d);
    assert_int_equal(system(cmd), 0);
    st_model *m = NULL;
    st_status rc = st_model_load(d, &m);
    printf("  refused: %s\n", st_last_error());
    assert_int_equal(rc, ST_ERR_SHAPE);
    assert_non_null(strstr(st_last_error(), "fused experts 'backbone.layers.1.mixer.experts.up_proj'"));
    assert_non_null(strstr(st_last_error(), "[8, 32, 128]"));
    assert_null(m);
    rm_rf(d);
    free(d);
}

static int setup(void **st) {
    (void)st;
    g_dir = test_tmpdir("schema");
    g_fused = test_tmpdir("schema-fused");
    st_synth_opts o;
    if (st_synth_preset("default", &o) || st_synth_write(g_dir, &o)) return -1;
    write_fused(g_dir, g_fused);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    rm_rf(g_dir);
    rm_rf(g_fused);
    free(g_dir);
    free(g_fused);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synth_in_schema),
        cmocka_unit_test(test_train_table),
        cmocka_unit_test(test_dim_sizes),
        cmocka_unit_test(test_fused_experts),
        cmocka_unit_test(test_fused_train),
        cmocka_unit_test(test_fused_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
