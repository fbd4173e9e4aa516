/*
 * gguf_export.c — see gguf_export.h. Names, shapes and keys follow what
 * llama.cpp's loader asks for (and what its HF converter writes):
 *
 *   token_embd / output_norm / output                 embeddings, final norm, LM head
 *   blk.N.attn_norm                                   the block's pre-norm
 *   M  blk.N.ssm_in, ssm_conv1d(.bias) {K, conv_dim}  (conv squeezed), ssm_dt.bias,
 *      ssm_a {1,nh} = -exp(A_log), ssm_d {1,nh}, ssm_norm {din/G, G}, ssm_out
 *   *  blk.N.attn_q / attn_k / attn_v / attn_output
 *   -  blk.N.ffn_up / ffn_down                        (nemotron_h)
 *   E  blk.N.ffn_gate_inp, exp_probs_b.bias, ffn_up_exps {H,F,E}, ffn_down_exps
 *      {F,H,E} (experts stacked), ffn_up_shexp / ffn_down_shexp
 *
 * A layer is recurrent for llama.cpp when its head_count_kv and
 * feed_forward_length entries are both 0, attention when only the FFN length
 * is 0, FFN otherwise. nemotron_h_moe makes every FFN layer an MoE layer, so a
 * dense relu² layer inside an MoE model is written as an MoE layer whose
 * routed experts are all zero (they add exactly 0 whatever the router picks)
 * and whose shared expert is the MLP; every shared expert is zero-padded to
 * one common width. Both are exact: a zero row of up gives relu(0)² = 0, and
 * a zero column of down adds nothing.
 */
#include "elastic/gguf_export.h"
#include "io/gguf.h"
#include "model/model.h"
#include "model/schema.h"
#include "util/util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { K_COPY, K_NEGEXP, K_ZERO, K_STACK, K_PADROWS, K_PADCOLS };

typedef struct {
    char name[96];
    int kind, type, ndim;
    int64_t ne[4];
    char src[200];          /* source tensor (K_STACK: a pattern with %d for the expert) */
    int64_t src_len;        /* K_PADROWS: source rows; K_PADCOLS: source row length */
    int n_exp;              /* K_STACK */
} gt;

typedef struct {
    gt *t;
    int n, cap;
    const st_model *m;
    int wtype;              /* type of the big matrices */
} gplan;

static st_status addt(gplan *p, int kind, int type, const char *name, const char *src, int ndim, int64_t ne0,
                      int64_t ne1, int64_t ne2) {
    if (p->n == p->cap) {
        int nc = p->cap ? 2 * p->cap : 128;
        gt *q = st_realloc(p->t, sizeof *q * (size_t)nc);
        if (!q) return st_err(ST_ERR_NOMEM, "out of memory");
        p->t = q; p->cap = nc;
    }
    gt *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->src, sizeof t->src, "%s", src ? src : "");
    t->kind = kind; t->ndim = ndim;
    t->ne[0] = ne0; t->ne[1] = ne1; t->ne[2] = ne2; t->ne[3] = 1;
    /* q8_0 needs rows in whole 32-blocks; the converter falls back to f16 */
    t->type = type == ST_GGML_Q8_0 && ne0 % 32 ? ST_GGML_F16 : type;
    if (kind == K_COPY || kind == K_NEGEXP) {
        const st_sf_tensor *s = st_model_tensor(p->m, src);
        int64_t n = ne0 * ne1 * ne2;
        if (!s) return st_err(ST_ERR_MISSING, "gguf: missing tensor '%s'", src);
        if (!st_dtype_is_float(s->dt) || s->dt == ST_DT_F8_E4M3 || s->dt == ST_DT_F8_E5M2)
            return st_err(ST_ERR_UNSUPPORTED, "gguf: '%s' is quantized (%d); export a float (BF16/F16/F32) checkpoint",
                          src, (int)s->dt);
        if (st_sf_numel(s) != n)
            return st_err(ST_ERR_FORMAT, "gguf: '%s' has %lld elements, expected %lld", src,
                          (long long)st_sf_numel(s), (long long)n);
    }
    return ST_OK;
}

/* Fill row r (ne[0] floats) of output tensor t. */
static st_status get_row(const gplan *p, const gt *t, int64_t r, float *row) {
    const int64_t n = t->ne[0];
    char nm[220];
    const st_sf_tensor *s = NULL;
    int64_t off = 0, len = n;
    switch (t->kind) {
    case K_ZERO: memset(row, 0, sizeof *row * (size_t)n); return ST_OK;
    case K_COPY: case K_NEGEXP: s = st_model_tensor(p->m, t->src); off = r * n; break;
    case K_STACK: {
        int64_t per = t->ne[1];
        snprintf(nm, sizeof nm, t->src, (int)(r / per));
        if (!(s = st_model_tensor(p->m, nm))) return st_err(ST_ERR_MISSING, "gguf: missing tensor '%s'", nm);
        if (st_sf_numel(s) != per * n) return st_err(ST_ERR_FORMAT, "gguf: '%s' has the wrong size", nm);
        off = (r % per) * n;
        break;
    }
    case K_PADROWS:
        if (r >= t->src_len) { memset(row, 0, sizeof *row * (size_t)n); return ST_OK; }
        s = st_model_tensor(p->m, t->src); off = r * n;
        break;
    case K_PADCOLS:
        s = st_model_tensor(p->m, t->src); len = t->src_len; off = r * len;
        memset(row + len, 0, sizeof *row * (size_t)(n - len));
        break;
    }
    if (!s) return st_err(ST_ERR_MISSING, "gguf: missing tensor '%s'", t->src);
    if (!st_dtype_is_float(s->dt) || st_dtype_size(s->dt) < 2 || off + len > st_sf_numel(s))
        return st_err(ST_ERR_FORMAT, "gguf: '%s': unexpected dtype or size", s->name);
    st_convert_to_f32(s->dt, s->data + (size_t)off * st_dtype_size(s->dt), row, len, 1.0f);
    if (t->kind == K_NEGEXP)
        for (int64_t i = 0; i < n; i++) row[i] = -expf(row[i]);
    return ST_OK;
}

/* One row in the output type into out; returns its byte count. */
static size_t encode_row(int type, const float *x, int64_t n, uint8_t *out) {
    switch (type) {
    case ST_GGML_F32: memcpy(out, x, 4 * (size_t)n); return 4 * (size_t)n;
    case ST_GGML_F16: case ST_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = type == ST_GGML_F16 ? st_f32_to_f16(x[i]) : st_f32_to_bf16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        return 2 * (size_t)n;
    default: /* Q8_0: per 32 values, d = amax/127 as f16, q = round(x/d) */
        for (int64_t b = 0; b < n / 32; b++) {
            const float *v = x + 32 * b;
            uint8_t *blk = out + 34 * b;
            float amax = 0;
            for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(v[k]));
            float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
            uint16_t h = st_f32_to_f16(d);
            memcpy(blk, &h, 2);
            for (int k = 0; k < 32; k++) blk[2 + k] = (uint8_t)(int8_t)lrintf(v[k] * id);
        }
        return (size_t)(n / 32 * 34);
    }
}

/* ------------------------------------------------------------ tokenizer */

static json_t *load_json(const char *dir, const char *file) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return json_load_file(path, 0, NULL);
}

/* The pre-tokenizer Split regexes llama.cpp reproduces, by its names for them. */
static const struct { const char *pre, *regex; } k_pre[] = {
    {"tekken", "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}"
               "\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
               "[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"llama-bpe", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"qwen2", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
              "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
};

static const char *find_pre(json_t *tok) {
    json_t *pt = json_object_get(tok, "pre_tokenizer");
    if (json_is_object(pt) && !strcmp(json_string_value(json_object_get(pt, "type")) ?: "", "ByteLevel") &&
        json_is_true(json_object_get(pt, "use_regex")))
        return "gpt-2";
    json_t *seq = json_object_get(pt, "pretokenizers");
    const char *rx = NULL;
    int bl = 0;
    size_t i;
    json_t *x;
    json_array_foreach(seq, i, x) {
        const char *ty = json_string_value(json_object_get(x, "type")) ?: "";
        if (!strcmp(ty, "Split")) rx = json_string_value(json_object_get(json_object_get(x, "pattern"), "Regex"));
        else if (!strcmp(ty, "ByteLevel")) bl = !json_is_true(json_object_get(x, "use_regex"));
        else return NULL;
    }
    if (!rx || !bl || json_array_size(seq) != 2) return NULL;
    for (size_t k = 0; k < sizeof k_pre / sizeof *k_pre; k++)
        if (!strcmp(rx, k_pre[k].regex)) return k_pre[k].pre;
    return NULL;
}

static st_status write_tokenizer(st_gguf_w *w, const st_model *m) {
    const st_config *c = &m->cfg;
    json_t *tok = load_json(m->dir, "tokenizer.json"), *tc = load_json(m->dir, "tokenizer_config.json");
    st_status rc = ST_OK;
    char **toks = NULL;
    int32_t *types = NULL;
    const char **merges = NULL;
    char **merge_buf = NULL;
    size_t nm = 0;
    const int V = c->vocab_size;
    if (!tok) { rc = st_err(ST_ERR_MISSING, "gguf: %s/tokenizer.json is missing or not JSON", m->dir); goto out; }
    json_t *model = json_object_get(tok, "model"), *vocab = json_object_get(model, "vocab");
    const char *mt = json_string_value(json_object_get(model, "type"));
    if (!mt || strcmp(mt, "BPE") || !json_is_object(vocab) || json_is_true(json_object_get(model, "byte_fallback"))) {
        rc = st_err(ST_ERR_UNSUPPORTED, "gguf: only byte-level BPE tokenizers (llama.cpp's gpt2 model) are exported");
        goto out;
    }
    const char *pre = find_pre(tok);
    if (!pre) {
        rc = st_err(ST_ERR_UNSUPPORTED, "gguf: the tokenizer's pre-tokenizer matches none llama.cpp reproduces "
                    "(tekken, llama-bpe, qwen2, gpt-2); refusing to write a file that would tokenize differently");
        goto out;
    }
    toks = st_calloc((size_t)V, sizeof *toks);
    types = st_calloc((size_t)V, sizeof *types);
    if (!toks || !types) { rc = ST_ERR_NOMEM; goto out; }
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        json_int_t id = json_integer_value(v);
        if (id < 0 || id >= V) { rc = st_err(ST_ERR_FORMAT, "gguf: token '%s' id %lld outside the vocabulary", k, (long long)id); goto out; }
        free(toks[id]);
        /* checked here: a NULL left would be taken for an unnamed row below */
        if (!(toks[id] = st_strdup(k))) { rc = ST_ERR_NOMEM; goto out; }
        types[id] = 1; /* normal */
    }
    size_t i;
    json_array_foreach(json_object_get(tok, "added_tokens"), i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        const char *s = json_string_value(json_object_get(v, "content"));
        if (!s || id < 0 || id >= V) continue;
        free(toks[id]);
        if (!(toks[id] = st_strdup(s))) { rc = ST_ERR_NOMEM; goto out; }
        types[id] = json_is_true(json_object_get(v, "special")) ? 3 /* control */ : 4 /* user-defined */;
    }
    for (int t = 0; t < V; t++) /* rows of the embedding no token names: the converter's [PADn], unused */
        if (!toks[t]) {
            char b[32];
            snprintf(b, sizeof b, "[PAD%d]", t);
            toks[t] = st_strdup(b);
            types[t] = 5;
        }
    for (int t = 0; t < V; t++) if (!toks[t]) { rc = ST_ERR_NOMEM; goto out; }
    json_t *mj = json_object_get(model, "merges");
    nm = json_array_size(mj);
    merges = st_calloc(nm ? nm : 1, sizeof *merges);
    merge_buf = st_calloc(nm ? nm : 1, sizeof *merge_buf);
    if (!merges || !merge_buf) { rc = ST_ERR_NOMEM; goto out; }
    json_array_foreach(mj, i, v) {
        if (json_is_string(v)) merges[i] = json_string_value(v);
        else if (json_is_array(v) && json_array_size(v) == 2) { /* ["a", "b"] form */
            const char *a = json_string_value(json_array_get(v, 0)), *b = json_string_value(json_array_get(v, 1));
            size_t n = strlen(a ?: "") + strlen(b ?: "") + 2;
            if (!(merge_buf[i] = st_malloc(n))) { rc = ST_ERR_NOMEM; goto out; }
            snprintf(merge_buf[i], n, "%s %s", a ?: "", b ?: "");
            merges[i] = merge_buf[i];
        } else { rc = st_err(ST_ERR_FORMAT, "gguf: merge %zu is neither \"a b\" nor [a, b]", i); goto out; }
    }
    rc = st_gguf_kv_str(w, "tokenizer.ggml.model", "gpt2");
    if (!rc) rc = st_gguf_kv_str(w, "tokenizer.ggml.pre", pre);
    if (!rc) rc = st_gguf_kv_strs(w, "tokenizer.ggml.tokens", (const char *const *)toks, (size_t)V);
    if (!rc) rc = st_gguf_kv_i32s(w, "tokenizer.ggml.token_type", types, (size_t)V);
    if (!rc) rc = st_gguf_kv_strs(w, "tokenizer.ggml.merges", merges, nm);
    if (!rc && c->bos_token_id >= 0) rc = st_gguf_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_token_id);
    if (!rc && c->n_eos > 0) rc = st_gguf_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_token_ids[0]);
    if (!rc && c->pad_token_id >= 0) rc = st_gguf_kv_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)c->pad_token_id);
    /* add-BOS/EOS as tokenizer_config.json says (llama.cpp would otherwise guess) */
    if (!rc) rc = st_gguf_kv_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(json_object_get(tc, "add_bos_token")));
    if (!rc) rc = st_gguf_kv_bool(w, "tokenizer.ggml.add_eos_token", json_is_true(json_object_get(tc, "add_eos_token")));
    const char *tmpl = json_string_value(json_object_get(tc, "chat_template"));
    if (!rc && tmpl) rc = st_gguf_kv_str(w, "tokenizer.chat_template", tmpl);
out:
    if (toks) for (int t = 0; t < V; t++) free(toks[t]);
    if (merge_buf) for (size_t j = 0; j < nm; j++) free(merge_buf[j]);
    free(toks); free(types); free(merges); free(merge_buf);
    json_decref(tok); json_decref(tc);
    return rc;
}

/* ------------------------------------------------------------ plan + keys */

static int parse_precision(const char *p) {
    if (!p || !strcmp(p, "f32")) return ST_GGML_F32;
    if (!strcmp(p, "f16")) return ST_GGML_F16;
    if (!strcmp(p, "bf16")) return ST_GGML_BF16;
    if (!strcmp(p, "q8_0")) return ST_GGML_Q8_0;
    return -1;
}

/* The GGUF tensor of spec s in layer l (-1: global): llama.cpp's name, dims
 * reversed (ggml's ne) without the size-1 ones, matrices in the weight type,
 * the rest F32. dense: s is a spec of an MoE layer standing in for the dense
 * MLP of layer l (see the top of the file); shw: the common shared width. */
static st_status gguf_spec(gplan *p, const st_tspec *s, int l, int dense, int shw) {
    const st_config *c = &p->m->cfg;
    char n[96], src[200];
    if (l >= 0) snprintf(n, sizeof n, "blk.%d.%s", l, s->gguf);
    else snprintf(n, sizeof n, "%s", s->gguf);
    if (l >= 0) snprintf(src, sizeof src, "backbone.layers.%d.%s", l, s->name); /* experts: keeps the %d */
    else snprintf(src, sizeof src, "%s", s->name);
    int type = (s->flags & ST_TS_MAT) && s->dtype != ST_DTR_F32 ? p->wtype : ST_GGML_F32, nd = 0, kind = K_COPY;
    int64_t ne[3] = {1, 1, 1}, len = 0;
    for (int k = s->rank - 1; k >= 0; k--)
        if (s->dim[k] != ST_DIM_ONE) ne[nd++] = st_dim_size(c, NULL, s->dim[k]);
    const int64_t nh = c->mamba_num_heads, G = c->n_groups;
    const int sw = dense ? c->intermediate_size : c->moe_shared_expert_intermediate_size;
    switch (s->id) {
    case ST_T_A_LOG: case ST_T_D: /* ssm_a {1, nh} = -exp(A_log), ssm_d {1, nh} */
        if (s->id == ST_T_A_LOG) kind = K_NEGEXP;
        nd = 2; ne[0] = 1; ne[1] = nh;
        break;
    case ST_T_GNORM: nd = 2; ne[0] = nh * c->mamba_head_dim / G; ne[1] = G; break; /* {din/G, G} */
    case ST_T_GATE: case ST_T_E_BIAS: if (dense) kind = K_ZERO; break;
    case ST_T_EXP_UP: case ST_T_EXP_DOWN:
        if (dense) kind = K_ZERO;
        else {
            char fn[200];
            kind = K_STACK;
            if (st_model_fused(p->m, s, l, fn, sizeof fn)) { /* [E][out][in] is ggml's stack already */
                kind = K_COPY;
                snprintf(src, sizeof src, "%s", fn);
            }
        }
        break;
    case ST_T_SH_UP: case ST_T_SH_DOWN: {
        int up = s->id == ST_T_SH_UP, k;
        if (dense) snprintf(src, sizeof src, "backbone.layers.%d.%s", l, st_schema_layer('-', &k)[up ? 0 : 1].name);
        kind = up ? K_PADROWS : K_PADCOLS;
        ne[up ? 1 : 0] = shw;
        len = sw;
        break;
    }
    default: break;
    }
    st_status rc = addt(p, kind, type, n, src, nd, ne[0], ne[1], ne[2]);
    if (!rc && kind == K_STACK) p->t[p->n - 1].n_exp = c->n_routed_experts;
    if (!rc && (kind == K_PADROWS || kind == K_PADCOLS)) p->t[p->n - 1].src_len = len;
    return rc;
}

static st_status build(gplan *p, st_gguf_w *w, const char *arch, int moe, int shw) {
    const st_config *c = &p->m->cfg;
    const int H = c->hidden_size, L = c->n_layers;
    const int din = c->mamba_num_heads * c->mamba_head_dim, G = c->n_groups, nh = c->mamba_num_heads;
    const int E = c->n_routed_experts, FE = c->moe_intermediate_size;
#define T(x) do { st_status rc_ = (x); if (rc_) return rc_; } while (0)
    T(gguf_spec(p, st_schema_global(ST_T_EMBED), -1, 0, shw));
    for (int l = 0; l < L; l++) {
        const int dense = c->pattern[l] == '-' && moe; /* nemotron_h_moe: an MoE layer with zero experts */
        int n;
        const st_tspec *t = st_schema_layer(dense ? 'E' : c->pattern[l], &n);
        T(gguf_spec(p, st_schema_norm(), l, 0, shw));
        for (int i = 0; i < n; i++)
            if (st_tspec_present(&t[i], c)) T(gguf_spec(p, &t[i], l, dense, shw));
    }
    T(gguf_spec(p, st_schema_global(ST_T_NORM_F), -1, 0, shw));
    if (c->tie_word_embeddings)
        T(addt(p, K_COPY, p->wtype, "output.weight", "backbone.embeddings.weight", 2, H, c->vocab_size, 1));
    else
        T(gguf_spec(p, st_schema_global(ST_T_LM_HEAD), -1, 0, shw));
    /* hyper-parameters */
    char k[128];
#define K(x) (snprintf(k, sizeof k, "%s.%s", arch, x), k)
    int32_t hkv[ST_MAX_LAYERS], ff[ST_MAX_LAYERS];
    for (int l = 0; l < L; l++) {
        const char ty = c->pattern[l];
        hkv[l] = ty == '*' ? c->num_key_value_heads : 0;
        ff[l] = ty == '-' ? (moe ? shw : c->intermediate_size) : ty == 'E' ? FE : 0;
    }
    T(st_gguf_kv_u32(w, K("context_length"), (uint32_t)c->max_position_embeddings));
    T(st_gguf_kv_u32(w, K("embedding_length"), (uint32_t)H));
    T(st_gguf_kv_u32(w, K("block_count"), (uint32_t)L));
    T(st_gguf_kv_u32(w, K("vocab_size"), (uint32_t)c->vocab_size));
    T(st_gguf_kv_i32s(w, K("feed_forward_length"), ff, (size_t)L));
    T(st_gguf_kv_u32(w, K("attention.head_count"), (uint32_t)c->num_attention_heads));
    T(st_gguf_kv_i32s(w, K("attention.head_count_kv"), hkv, (size_t)L));
    T(st_gguf_kv_u32(w, K("attention.key_length"), (uint32_t)c->head_dim));
    T(st_gguf_kv_u32(w, K("attention.value_length"), (uint32_t)c->head_dim));
    /* older llama.cpp builds read the first, newer ones the second */
    T(st_gguf_kv_f32(w, K("attention.layer_norm_epsilon"), c->norm_eps));
    T(st_gguf_kv_f32(w, K("attention.layer_norm_rms_epsilon"), c->norm_eps));
    T(st_gguf_kv_u32(w, K("ssm.conv_kernel"), (uint32_t)c->conv_kernel));
    T(st_gguf_kv_u32(w, K("ssm.inner_size"), (uint32_t)din));
    T(st_gguf_kv_u32(w, K("ssm.state_size"), (uint32_t)c->ssm_state_size));
    T(st_gguf_kv_u32(w, K("ssm.time_step_rank"), (uint32_t)nh));
    T(st_gguf_kv_u32(w, K("ssm.group_count"), (uint32_t)G));
    if (moe) {
        T(st_gguf_kv_u32(w, K("expert_count"), (uint32_t)E));
        T(st_gguf_kv_u32(w, K("expert_used_count"), (uint32_t)c->num_experts_per_tok));
        T(st_gguf_kv_u32(w, K("expert_shared_count"), 1));
        T(st_gguf_kv_u32(w, K("expert_feed_forward_length"), (uint32_t)FE));
        T(st_gguf_kv_u32(w, K("expert_shared_feed_forward_length"), (uint32_t)shw));
        T(st_gguf_kv_bool(w, K("expert_weights_norm"), c->norm_topk_prob));
        T(st_gguf_kv_f32(w, K("expert_weights_scale"), c->routed_scaling_factor));
        T(st_gguf_kv_u32(w, K("expert_gating_func"), 2)); /* sigmoid */
        T(st_gguf_kv_u32(w, K("expert_group_count"), (uint32_t)(c->n_group > 0 ? c->n_group : 1)));
        T(st_gguf_kv_u32(w, K("expert_group_used_count"), (uint32_t)(c->topk_group > 0 ? c->topk_group : 1)));
    }
#undef K
#undef T
    return ST_OK;
}

st_status st_gguf_export(const st_model *m, const char *path, const st_gguf_export_opts *o) {
    const st_config *c = &m->cfg;
    int wtype = parse_precision(o->precision);
    if (wtype < 0) return st_err(ST_ERR_ARG, "gguf: precision '%s' (use f32, f16, bf16 or q8_0)", o->precision);
    int moe = strchr(c->pattern, 'E') != NULL, dense = strchr(c->pattern, '-') != NULL;
    if (c->time_step_limit_min > 0 || isfinite(c->time_step_limit_max))
        return st_err(ST_ERR_UNSUPPORTED, "gguf: llama.cpp applies no time_step_limit; this model clamps dt");
    if (moe && c->n_shared_experts != 1)
        return st_err(ST_ERR_UNSUPPORTED, "gguf: llama.cpp's nemotron_h_moe needs exactly one shared expert (this model "
                      "has %d)", c->n_shared_experts);
    /* one shared width for every FFN layer (see the top of the file) */
    int shw = moe ? c->moe_shared_expert_intermediate_size : 0;
    if (moe && dense && c->intermediate_size > shw) shw = c->intermediate_size;
    const char *arch = moe ? "nemotron_h_moe" : "nemotron_h";
    gplan p = {.m = m, .wtype = wtype};
    st_gguf_w *w = NULL;
    float *row = NULL;
    uint8_t *enc = NULL;
    st_status rc = st_gguf_w_new(&w);
    if (!rc) rc = st_gguf_kv_str(w, "general.architecture", arch);
    if (!rc) rc = st_gguf_kv_str(w, "general.type", "model");
    if (!rc) rc = st_gguf_kv_str(w, "general.name", o->name ? o->name : "starling");
    if (!rc) rc = st_gguf_kv_u32(w, "general.alignment", ST_GGUF_ALIGN);
    static const uint32_t ftype[] = {[ST_GGML_F32] = 0, [ST_GGML_F16] = 1, [ST_GGML_Q8_0] = 7, [ST_GGML_BF16] = 32};
    if (!rc) rc = st_gguf_kv_u32(w, "general.file_type", ftype[wtype]);
    if (!rc) rc = st_gguf_kv_u32(w, "general.quantization_version", 2);
    if (!rc) rc = build(&p, w, arch, moe, shw);
    if (!rc) rc = write_tokenizer(w, m);
    int64_t maxrow = 1;
    for (int i = 0; !rc && i < p.n; i++) {
        const gt *t = &p.t[i];
        rc = st_gguf_tensor(w, t->name, t->type, t->ndim, t->ne);
        if (t->ne[0] > maxrow) maxrow = t->ne[0];
    }
    if (!rc && (!(row = st_malloc(sizeof *row * (size_t)maxrow)) || !(enc = st_malloc(4 * (size_t)maxrow)))) rc = ST_ERR_NOMEM;
    if (!rc) rc = st_gguf_w_begin(w, path);
    uint64_t done = 0, total = w ? st_gguf_w_data_bytes(w) : 0;
    for (int i = 0; !rc && i < p.n; i++) {
        const gt *t = &p.t[i];
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        for (int64_t r = 0; !rc && r < rows; r++) {
            rc = get_row(&p, t, r, row);
            size_t nb = rc ? 0 : encode_row(t->type, row, t->ne[0], enc);
            if (!rc) rc = st_gguf_w_write(w, enc, nb);
            done += nb;
        }
        if (!rc && o->cancel && *o->cancel) rc = st_err(ST_ERR_IO, "gguf: interrupted");
        if (o->progress) fprintf(stderr, "\rgguf: %3.0f%%  %s%s", 100.0 * (double)done / (double)(total ? total : 1),
                                 t->name, i + 1 == p.n || rc ? "\n" : "\033[K");
    }
    if (!rc) rc = st_gguf_w_finish(w);
    st_gguf_w_free(w);
    free(p.t); free(row); free(enc);
    return rc;
}
