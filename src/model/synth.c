/*
 * synth.c — deterministic random Nemotron-H checkpoints: the default model
 * `make run` uses until a trained one ships, the ~1 GB benchmark model, and
 * fixtures for tests. Writes a complete Hugging Face directory: config.json
 * (with an `elastic` block of nested budgets), model.safetensors,
 * generation_config.json and a byte-level tokenizer.json with the Nemotron 3
 * chat special tokens.
 */
#include "model/model.h"
#include "model/schema.h"
#include "model/synth.h"
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* splitmix64 → uniform / normal draws; fixed seed = identical files everywhere */
static float unif(uint64_t *s) { return (float)((st_splitmix64(s) >> 40) * (1.0 / 16777216.0)); }
static float gauss(uint64_t *s) {
    float u1 = unif(s) + 1e-7f, u2 = unif(s);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

int st_synth_preset(const char *name, st_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->seed = 1234;
    o->dtype = ST_DT_BF16;
    if (!strcmp(name, "default") || !strcmp(name, "tiny")) {
        /* every layer type; 2 Mamba groups, GQA 4/2, 8 experts top-2 + shared */
        snprintf(o->pattern, sizeof o->pattern, "ME*M-EME");
        o->hidden = 128; o->vocab = 16 + 256;
        o->mamba_heads = 8; o->mamba_head_dim = 16; o->state = 16; o->groups = 2;
        o->attn_heads = 4; o->kv_heads = 2; o->head_dim = 32;
        o->experts = 8; o->top_k = 2; o->moe_ffn = 64; o->shared_ffn = 128; o->ffn = 256;
        return 0;
    }
    if (!strcmp(name, "bench")) {
        /* ≈1 GB of BF16 weights, Nano-3-like proportions */
        snprintf(o->pattern, sizeof o->pattern, "MEMEM*EMEMEM");
        o->hidden = 1536; o->vocab = 32768;
        o->mamba_heads = 32; o->mamba_head_dim = 64; o->state = 64; o->groups = 4;
        o->attn_heads = 16; o->kv_heads = 2; o->head_dim = 96;
        o->experts = 16; o->top_k = 4; o->moe_ffn = 1024; o->shared_ffn = 2048; o->ffn = 2048;
        return 0;
    }
    if (!strcmp(name, "nano8")) {
        /* the real Nemotron-3-Nano layer widths in 8 layers (≈2.75 GB of BF16,
         * ≈1 GB read per decoded token): the decode/prefill benchmark shape */
        snprintf(o->pattern, sizeof o->pattern, "MEM*EMEM");
        o->hidden = 2688; o->vocab = 32768;
        o->mamba_heads = 64; o->mamba_head_dim = 64; o->state = 128; o->groups = 8;
        o->attn_heads = 32; o->kv_heads = 2; o->head_dim = 128;
        o->experts = 32; o->top_k = 6; o->moe_ffn = 1856; o->shared_ffn = 3712; o->ffn = 3712;
        return 0;
    }
    if (!strcmp(name, "big")) {
        /* ≈3 GB of BF16: the bench model with more experts (slicing benchmark) */
        st_synth_preset("bench", o);
        o->experts = 64;
        return 0;
    }
    return -1;
}

/* --------------------------------------------------------------- tokenizer */

/* GPT-2 byte ↔ unicode map: printable bytes map to themselves, the rest to
 * U+0100 + k in byte order, so every byte has a visible character. */
static int byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int k = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255))) k++;
    return 256 + k;
}

static const char *g_specials[16] = {"<unk>", "<s>", "</s>", "<SPECIAL_3>", "<SPECIAL_4>", "<SPECIAL_5>",
                                     "<SPECIAL_6>", "<SPECIAL_7>", "<SPECIAL_8>", "<SPECIAL_9>", "<|im_start|>",
                                     "<|im_end|>", "<think>", "</think>", "<SPECIAL_14>", "<SPECIAL_15>"};

static st_status write_tokenizer(const char *dir, int vocab) {
    json_t *added = json_array();
    for (int i = 0; i < 16; i++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", i, "content", g_specials[i],
                                               "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                                               "special", 1));
    json_t *v = json_object();
    for (int i = 0; i < 16; i++) json_object_set_new(v, g_specials[i], json_integer(i));
    for (int b = 0; b < 256 && 16 + b < vocab; b++) {
        int cp = byte_to_cp(b);
        char s[4];
        if (cp < 0x80) { s[0] = (char)cp; s[1] = 0; }
        else { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); s[2] = 0; }
        json_object_set_new(v, s, json_integer(16 + b));
    }
    const char *re = "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
                     "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"
                     "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    json_t *tok = json_pack(
        "{s:s, s:n, s:n, s:o, s:n, s:{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}, s:n,"
        " s:{s:s, s:b, s:b, s:b}, s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:[]}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer", "type",
        "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex", re, "behavior", "Isolated", "invert", 0,
        "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0, "post_processor", "decoder",
        "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1, "model", "type", "BPE",
        "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback",
        0, "ignore_merges", 1, "vocab", v, "merges");
    if (!tok) return st_err(ST_ERR_NOMEM, "synth: cannot build tokenizer.json");
    char *s = json_dumps(tok, JSON_INDENT(1) | JSON_ENSURE_ASCII);
    json_decref(tok);
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    st_status rc = st_write_file_atomic(p, s, strlen(s));
    free(s);
    if (rc) return rc;
    const char *tc = "{\n  \"add_bos_token\": false,\n  \"add_eos_token\": false,\n  \"bos_token\": \"<s>\",\n"
                     "  \"eos_token\": \"<|im_end|>\",\n  \"unk_token\": \"<unk>\",\n"
                     "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n";
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    rc = st_write_file_atomic(p, tc, strlen(tc));
    if (rc) return rc;
    const char *gc = "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": [2, 11],\n  \"pad_token_id\": 0\n}\n";
    snprintf(p, sizeof p, "%s/generation_config.json", dir);
    return st_write_file_atomic(p, gc, strlen(gc));
}

/* ------------------------------------------------------------------ config */

static json_t *budget_obj(const char *name, const st_synth_opts *o, int div) {
    /* a nested budget: every width divided by div (heads by groups) */
    json_t *b = json_pack("{s:s}", "name", name);
    if (div == 1) return b;
    int G = o->groups, kv = o->kv_heads;
    json_object_set_new(b, "hidden_size", json_integer(o->hidden * 3 / (2 + div)));
    if (strchr(o->pattern, '*')) {
        int q = o->attn_heads / kv / div;
        json_object_set_new(b, "num_attention_heads", json_integer((q > 0 ? q : 1) * kv));
    }
    if (strchr(o->pattern, 'M')) {
        int r = o->mamba_heads / G / div;
        json_object_set_new(b, "mamba_num_heads", json_integer((r > 0 ? r : 1) * G));
        json_object_set_new(b, "mamba_head_dim", json_integer(o->mamba_head_dim * 3 / (2 + div)));
    }
    if (strchr(o->pattern, 'E')) {
        json_object_set_new(b, "n_routed_experts", json_integer(o->experts * 3 / (2 + div)));
        json_object_set_new(b, "moe_intermediate_size", json_integer(o->moe_ffn / div));
        json_object_set_new(b, "moe_shared_expert_intermediate_size", json_integer(o->shared_ffn / div));
    }
    if (strchr(o->pattern, '-')) json_object_set_new(b, "intermediate_size", json_integer(o->ffn / div));
    return b;
}

static st_status write_config(const char *dir, const st_synth_opts *o) {
    int L = (int)strlen(o->pattern);
    json_t *c = json_pack("{s:[s], s:s, s:i, s:i, s:s, s:i, s:i, s:i, s:b, s:i, s:i, s:i, s:i, s:i, s:b,"
                          " s:i, s:s, s:b, s:i, s:f, s:b, s:i, s:i, s:i, s:i, s:s, s:b, s:b}",
                          "architectures", "NemotronHForCausalLM", "model_type", "nemotron_h", "vocab_size", o->vocab,
                          "hidden_size", o->hidden, "hybrid_override_pattern", o->pattern, "num_hidden_layers", L,
                          "num_attention_heads", o->attn_heads, "num_key_value_heads", o->kv_heads, "attention_bias", 0,
                          "head_dim", o->head_dim, "mamba_num_heads", o->mamba_heads, "mamba_head_dim",
                          o->mamba_head_dim, "ssm_state_size", o->state, "n_groups", o->groups, "use_conv_bias", 1,
                          "conv_kernel", 4, "mamba_hidden_act", "silu", "mamba_proj_bias", 0, "intermediate_size",
                          o->ffn, "layer_norm_epsilon", 1e-5, "tie_word_embeddings", 0, "bos_token_id", 1,
                          "eos_token_id", 2, "pad_token_id", 0, "max_position_embeddings", 8192, "mlp_hidden_act",
                          "relu2", "residual_in_fp32", 0, "mlp_bias", 0);
    if (!c) return st_err(ST_ERR_NOMEM, "synth: cannot build config.json");
    json_object_set_new(c, "torch_dtype", json_string(o->dtype == ST_DT_F32 ? "float32" : "bfloat16"));
    if (strchr(o->pattern, 'E')) {
        json_object_set_new(c, "n_routed_experts", json_integer(o->experts));
        json_object_set_new(c, "num_experts_per_tok", json_integer(o->top_k));
        json_object_set_new(c, "moe_intermediate_size", json_integer(o->moe_ffn));
        json_object_set_new(c, "n_shared_experts", json_integer(1));
        json_object_set_new(c, "moe_shared_expert_intermediate_size", json_integer(o->shared_ffn));
        json_object_set_new(c, "n_group", json_integer(1));
        json_object_set_new(c, "topk_group", json_integer(1));
        json_object_set_new(c, "routed_scaling_factor", json_real(2.5));
        json_object_set_new(c, "norm_topk_prob", json_true());
    }
    json_t *el = json_pack("{s:i, s:s, s:[o,o,o]}", "format_version", 1, "default_budget", "L", "budgets",
                           budget_obj("L", o, 1), budget_obj("M", o, 2), budget_obj("S", o, 4));
    json_object_set_new(c, "elastic", el);
    char *s = json_dumps(c, JSON_INDENT(2));
    json_decref(c);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    st_status rc = st_write_file_atomic(p, s, strlen(s));
    free(s);
    return rc;
}

/* ----------------------------------------------------------------- weights */

typedef enum { INIT_NORMAL, INIT_ONES, INIT_ALOG, INIT_DTBIAS, INIT_CONV, INIT_ZERO } init_kind;

typedef struct {
    char name[160];
    int ndim;
    int64_t shape[3];
    init_kind init;
    float std;
    st_dtype dt;
} tspec;

/* The config the files describe (the shapes write_config writes). */
static void synth_config(const st_synth_opts *o, st_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->pattern, sizeof c->pattern, "%s", o->pattern);
    c->n_layers = (int)strlen(o->pattern);
    c->hidden_size = o->hidden; c->vocab_size = o->vocab;
    c->mamba_num_heads = o->mamba_heads; c->mamba_head_dim = o->mamba_head_dim;
    c->ssm_state_size = o->state; c->n_groups = o->groups; c->conv_kernel = 4; c->use_conv_bias = 1;
    c->num_attention_heads = o->attn_heads; c->num_key_value_heads = o->kv_heads; c->head_dim = o->head_dim;
    c->intermediate_size = o->ffn;
    c->n_routed_experts = o->experts; c->moe_intermediate_size = o->moe_ffn;
    c->n_shared_experts = 1; c->moe_shared_expert_intermediate_size = o->shared_ffn;
}

typedef struct {
    const st_synth_opts *o;
    const st_config *c;
    tspec *t;
    int n, cap;
} planner;

/* Matrices N(0, 1/fan_in) (the embeddings N(0, 1)), norms and D ones, the
 * Mamba vectors as mamba_ssm initialises them. */
static st_status plan_one(void *ctx, const st_tspec *s, int l, int e) {
    planner *p = ctx;
    if (p->n >= p->cap) { p->n++; return ST_OK; }
    tspec *t = &p->t[p->n++];
    st_tspec_name(s, l, e, t->name, sizeof t->name);
    t->ndim = st_tspec_shape(s, p->c, NULL, 1, t->shape);
    t->dt = s->dtype == ST_DTR_F32 ? ST_DT_F32 : p->o->dtype;
    t->std = 0;
    switch (s->id) {
    case ST_T_EMBED: t->init = INIT_NORMAL; t->std = 1.0f; break;
    case ST_T_NORM: case ST_T_NORM_F: case ST_T_GNORM: case ST_T_D: t->init = INIT_ONES; break;
    case ST_T_CONV_W: t->init = INIT_CONV; t->std = 0.5f; break;
    case ST_T_CONV_B: t->init = INIT_NORMAL; t->std = 0.1f; break;
    case ST_T_DT_BIAS: t->init = INIT_DTBIAS; break;
    case ST_T_A_LOG: t->init = INIT_ALOG; break;
    case ST_T_E_BIAS: t->init = INIT_NORMAL; t->std = 0.01f; break;
    default: t->init = INIT_NORMAL; t->std = 1.0f / sqrtf((float)t->shape[t->ndim - 1]); break;
    }
    return ST_OK;
}

static int plan(const st_synth_opts *o, tspec *t, int cap) {
    st_config c;
    synth_config(o, &c);
    planner p = {o, &c, t, 0, cap};
    st_schema_foreach(&c, ST_SCHEMA_BY_EXPERT, plan_one, &p);
    return p.n;
}

st_status st_synth_write(const char *dir, const st_synth_opts *o) {
    st_status mk = st_mkdir_p(dir);
    if (mk) return mk;
    if (o->dtype != ST_DT_BF16 && o->dtype != ST_DT_F32 && o->dtype != ST_DT_F16)
        return st_err(ST_ERR_ARG, "synth: dtype must be BF16, F16 or F32");
    int n = plan(o, NULL, 0);
    tspec *t = st_calloc((size_t)n, sizeof *t);
    if (!t) return ST_ERR_NOMEM;
    plan(o, t, n);
    st_sf_writer *w = NULL;
    st_status rc = st_sf_writer_new(&w);
    for (int i = 0; !rc && i < n; i++) rc = st_sf_writer_add(w, t[i].name, t[i].dt, t[i].ndim, t[i].shape);
    if (!rc) rc = st_sf_writer_meta(w, "format", "pt");
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!rc) rc = st_sf_writer_begin(w, path);
    st_progress pr;
    st_progress_begin(&pr, "synth", (double)st_sf_writer_data_bytes(w), "B");
    double done = 0;
    size_t chunk = 1 << 16;
    float *buf = st_malloc(chunk * sizeof(float));
    uint8_t *out = st_malloc(chunk * 4);
    if (!buf || !out) rc = ST_ERR_NOMEM;
    uint64_t seed = o->seed;
    for (int i = 0; !rc && i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
        uint64_t s = seed ^ (0x51ed2701ull * (uint64_t)(i + 1)); /* per-tensor stream: stable under edits */
        for (int64_t at = 0; !rc && at < numel; at += (int64_t)chunk) {
            int64_t m = numel - at < (int64_t)chunk ? numel - at : (int64_t)chunk;
            for (int64_t j = 0; j < m; j++) {
                int64_t k = at + j;
                float v = 0;
                switch (t[i].init) {
                case INIT_NORMAL: v = t[i].std * gauss(&s); break;
                case INIT_ONES: v = 1.0f; break;
                case INIT_ZERO: v = 0; break;
                case INIT_CONV: v = t[i].std * (2 * unif(&s) - 1); break;
                case INIT_ALOG: v = logf(1.0f + 15.0f * (float)k / (float)(numel > 1 ? numel - 1 : 1)); break;
                case INIT_DTBIAS: { /* dt spread log-uniformly over [1e-3, 1e-1]; bias = softplus⁻¹(dt) */
                    float dt = expf(logf(1e-3f) + (logf(1e-1f) - logf(1e-3f)) * unif(&s));
                    v = dt + logf(-expm1f(-dt));
                    break;
                }
                }
                buf[j] = v;
            }
            size_t bytes;
            if (t[i].dt == ST_DT_F32) { memcpy(out, buf, (size_t)m * 4); bytes = (size_t)m * 4; }
            else {
                for (int64_t j = 0; j < m; j++) {
                    uint16_t h = t[i].dt == ST_DT_BF16 ? st_f32_to_bf16(buf[j]) : st_f32_to_f16(buf[j]);
                    memcpy(out + 2 * j, &h, 2);
                }
                bytes = (size_t)m * 2;
            }
            rc = st_sf_writer_write(w, out, bytes);
            done += (double)bytes;
            st_progress_update(&pr, done);
        }
    }
    if (!rc) rc = st_sf_writer_finish(w);
    st_progress_end(&pr);
    st_sf_writer_free(w);
    free(buf); free(out); free(t);
    if (!rc) rc = write_config(dir, o);
    if (!rc) rc = write_tokenizer(dir, o->vocab);
    return rc;
}
