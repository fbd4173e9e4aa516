/*
 * train_model.c — the training model's parameter table (HF names, shapes,
 * offsets into one fp32 arena), initialisation, loading from an st_model and
 * saving as an HF checkpoint directory that st_model_load reads.
 */
#include "train/train.h"
#include "io/outdir.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/schema.h"
#include "util/util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ table */

/* Adds tensor `name` of shape s[0..nd) (nd ≤ 3) to the table (count-only
 * when m->p is NULL). Returns its index. */
static int add(st_tmodel *m, int cap, int nd, const int64_t *s, int decay, int train, const char *name) {
    int i = m->n_p++;
    size_t numel = 1;
    for (int k = 0; k < nd; k++) numel *= (size_t)s[k];
    if (m->p && i < cap) {
        st_tparam *t = &m->p[i];
        snprintf(t->name, sizeof t->name, "%s", name);
        t->ndim = nd;
        for (int k = 0; k < 3; k++) t->shape[k] = k < nd ? s[k] : 0;
        t->off = m->n_w;
        t->numel = numel;
        t->decay = (uint8_t)decay;
        t->train = (uint8_t)train;
    }
    m->n_w += (numel + 15) & ~(size_t)15; /* 64-byte aligned tensors */
    return i;
}

/* The index field of spec id (in layer L for layer tensors). */
static int *slot(st_tmodel *m, st_tlayer *L, st_tid id) {
    switch (id) {
    case ST_T_EMBED: return &m->embed;
    case ST_T_NORM_F: return &m->norm_f;
    case ST_T_LM_HEAD: return &m->lm_head;
    case ST_T_NORM: return &L->norm;
    case ST_T_IN_PROJ: return &L->in_proj;
    case ST_T_CONV_W: return &L->conv_w;
    case ST_T_CONV_B: return &L->conv_b;
    case ST_T_DT_BIAS: return &L->dt_bias;
    case ST_T_A_LOG: return &L->A_log;
    case ST_T_D: return &L->D;
    case ST_T_GNORM: return &L->gnorm;
    case ST_T_OUT_PROJ: return &L->out_proj;
    case ST_T_Q: return &L->wq;
    case ST_T_K: return &L->wk;
    case ST_T_V: return &L->wv;
    case ST_T_O: return &L->wo;
    case ST_T_UP: return &L->up;
    case ST_T_DOWN: return &L->down;
    case ST_T_GATE: return &L->gate;
    case ST_T_E_BIAS: return &L->e_bias;
    case ST_T_EXP_UP: return &L->exp_up;
    case ST_T_EXP_DOWN: return &L->exp_down;
    case ST_T_SH_UP: return &L->sh_up;
    case ST_T_SH_DOWN: return &L->sh_down;
    }
    return NULL;
}

typedef struct {
    st_tmodel *m;
    int cap;
    st_tlayer scratch; /* the layer record while counting (m->L NULL) */
} planner;

static st_status plan_one(void *ctx, const st_tspec *s, int l, int e) {
    planner *p = ctx;
    st_tmodel *m = p->m;
    st_tlayer *L = l < 0 ? NULL : m->L ? &m->L[l] : &p->scratch;
    if (s->id == ST_T_NORM) { /* first of every layer */
        memset(L, 0xff, sizeof *L); /* every index -1 */
        L->type = m->cfg.pattern[l];
    }
    int64_t sh[3];
    int nd = st_tspec_shape(s, &m->cfg, NULL, 1, sh);
    char nm[sizeof m->p[0].name];
    int i = add(m, p->cap, nd, sh, (s->flags & ST_TS_MAT) != 0, !(s->flags & ST_TS_NO_GRAD),
                st_tspec_name(s, l, e, nm, sizeof nm));
    if (e <= 0) *slot(m, L, s->id) = i; /* experts: the first of the consecutive run */
    return ST_OK;
}

/* Fill the table (p may be NULL to count). Tensor order = checkpoint order,
 * the experts of a layer tensor by tensor (every up_proj, then every down). */
static void plan(st_tmodel *m, int cap) {
    m->n_p = 0;
    m->n_w = 0;
    planner p = {.m = m, .cap = cap};
    st_schema_foreach(&m->cfg, ST_SCHEMA_BY_TENSOR, plan_one, &p);
    if (m->cfg.tie_word_embeddings) m->lm_head = m->embed;
}

st_status st_tmodel_new(const st_config *cfg, st_tmodel **out) {
    *out = NULL;
    if (cfg->tie_word_embeddings)
        return st_err(ST_ERR_UNSUPPORTED, "train: tied embeddings are not supported (Nemotron-H unties them)");
    if (strchr(cfg->pattern, 'E') && cfg->n_group > 1)
        return st_err(ST_ERR_UNSUPPORTED, "train: group-limited routing (n_group > 1) is not supported yet");
    if (strchr(cfg->pattern, 'M') && cfg->conv_kernel > 16)
        return st_err(ST_ERR_UNSUPPORTED, "train: conv_kernel %d > 16", cfg->conv_kernel);
    st_tmodel *m = st_calloc(1, sizeof *m);
    if (!m) return ST_ERR_NOMEM;
    m->cfg = *cfg;
    plan(m, 0);
    int n = m->n_p;
    m->p = st_calloc((size_t)n, sizeof *m->p);
    m->L = st_calloc((size_t)cfg->n_layers, sizeof *m->L);
    m->load = st_calloc((size_t)cfg->n_layers * (size_t)(cfg->n_routed_experts > 0 ? cfg->n_routed_experts : 1),
                        sizeof(double));
    if (!m->p || !m->L || !m->load) { st_tmodel_free(m); return ST_ERR_NOMEM; }
    plan(m, n);
    m->w = st_aligned_alloc(m->n_w * sizeof(float));
    m->g = st_aligned_alloc(m->n_w * sizeof(float));
    if (!m->w || !m->g) { st_tmodel_free(m); return st_err(ST_ERR_NOMEM, "train: %zu parameters do not fit", m->n_w); }
    for (int i = 0; i < m->n_p; i++) if (m->p[i].train) m->n_train += m->p[i].numel;
    *out = m;
    return ST_OK;
}

void st_tmodel_free(st_tmodel *m) {
    if (!m) return;
    st_tacts_free(m->a);
    free(m->p); free(m->L); free(m->load); free(m->w); free(m->g);
    free(m);
}

int st_tmodel_index(const st_tmodel *m, const st_tspec *s, int layer) {
    if (layer >= m->cfg.n_layers) return -1;
    int *i = slot((st_tmodel *)m, layer >= 0 ? &m->L[layer] : NULL, s->id);
    return i ? *i : -1;
}

int st_tmodel_find(const st_tmodel *m, const char *name) {
    for (int i = 0; i < m->n_p; i++) if (!strcmp(m->p[i].name, name)) return i;
    return -1;
}

double st_tmodel_active_params(const st_tmodel *m) {
    const st_config *c = &m->cfg;
    double n = 0;
    for (int i = 0; i < m->n_p; i++) n += (double)m->p[i].numel;
    n -= (double)m->p[m->embed].numel; /* a lookup, no FLOPs */
    if (strchr(c->pattern, 'E')) {
        double per = 2.0 * c->moe_intermediate_size * c->hidden_size;
        for (int l = 0; l < c->n_layers; l++)
            if (c->pattern[l] == 'E') n -= per * (c->n_routed_experts - c->num_experts_per_tok);
    }
    return n;
}

/* ------------------------------------------------------------ init */

static double unif(uint64_t *s) { return st_u01(st_splitmix64(s)); }
static float gauss(uint64_t *s) {
    double u = unif(s), v = unif(s);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

void st_tmodel_init(st_tmodel *m, uint64_t seed) {
    const st_config *c = &m->cfg;
    const float std = 0.02f, out_std = 0.02f / sqrtf(2.0f * (float)c->n_layers);
    for (int i = 0; i < m->n_p; i++) {
        const st_tparam *t = &m->p[i];
        float *w = m->w + t->off;
        uint64_t s = seed ^ (0x51ed2701ull * (uint64_t)(i + 1)); /* per-tensor stream */
        const char *n = t->name;
        if (ends_with(n, "A_log")) { /* A = -[1..16], log-spaced over heads as mamba_ssm's uniform(1,16) */
            for (size_t j = 0; j < t->numel; j++) w[j] = logf(1.0f + 15.0f * (float)unif(&s));
        } else if (ends_with(n, "dt_bias")) { /* dt ~ log-uniform [1e-3, 1e-1]; bias = softplus⁻¹(dt) */
            for (size_t j = 0; j < t->numel; j++) {
                float dt = expf(logf(1e-3f) + (logf(1e-1f) - logf(1e-3f)) * (float)unif(&s));
                w[j] = dt + logf(-expm1f(-dt));
            }
        } else if (ends_with(n, "conv1d.weight") || ends_with(n, "conv1d.bias")) {
            float b = 1.0f / sqrtf((float)c->conv_kernel); /* PyTorch conv default, fan_in = K */
            for (size_t j = 0; j < t->numel; j++) w[j] = b * (float)(2 * unif(&s) - 1);
        } else if (ends_with(n, "e_score_correction_bias")) {
            memset(w, 0, t->numel * sizeof(float));
        } else if (t->ndim == 1) { /* norms and D */
            for (size_t j = 0; j < t->numel; j++) w[j] = 1.0f;
        } else {
            int outp = ends_with(n, "out_proj.weight") || ends_with(n, "o_proj.weight") || ends_with(n, "down_proj.weight");
            float sd = outp ? out_std : std;
            for (size_t j = 0; j < t->numel; j++) w[j] = sd * gauss(&s);
        }
    }
}

/* ------------------------------------------------------------ load / save */

st_status st_tmodel_from_model(st_tmodel *m, const st_model *src) {
    for (int i = 0; i < m->n_p; i++) {
        const st_tparam *t = &m->p[i];
        const st_sf_tensor *s = st_model_tensor(src, t->name);
        size_t at = 0; /* elements into s: one expert of a fused [E][out][in] stack */
        int fused = 0;
        if (!s) {
            int l, e;
            char fn[256];
            const st_tspec *sp = st_schema_find(&m->cfg, t->name, &l, &e);
            if (sp && e >= 0 && (s = st_model_fused(src, sp, l, fn, sizeof fn)) &&
                (size_t)st_sf_numel(s) == t->numel * (size_t)m->cfg.n_routed_experts)
                at = (size_t)e * t->numel, fused = 1;
            else s = NULL;
        }
        if (!s) {
            if (ends_with(t->name, "conv1d.bias") && !m->cfg.use_conv_bias) continue;
            return st_err(ST_ERR_MISSING, "%s: missing tensor '%s'", st_model_dir(src), t->name);
        }
        if (!fused && (size_t)st_sf_numel(s) != t->numel)
            return st_err(ST_ERR_SHAPE, "%s: tensor '%s' has %lld elements, the training model needs %zu", st_model_dir(src),
                          t->name, (long long)st_sf_numel(s), t->numel);
        if (s->dt != ST_DT_F32 && s->dt != ST_DT_BF16 && s->dt != ST_DT_F16)
            return st_err(ST_ERR_UNSUPPORTED, "%s: tensor '%s' is %s; training starts from F32/BF16/F16 weights",
                          st_model_dir(src), t->name, st_dtype_name(s->dt));
        st_convert_to_f32(s->dt, s->data + at * st_dtype_size(s->dt), m->w + t->off, (int64_t)t->numel, 1.0f);
    }
    return ST_OK;
}

char *st_config_to_json(const st_config *c) {
    json_t *j = json_pack("{s:[s], s:s, s:i, s:i, s:s, s:i, s:f, s:b, s:i, s:i, s:i}", "architectures",
                          "NemotronHForCausalLM", "model_type", "nemotron_h", "vocab_size", c->vocab_size, "hidden_size",
                          c->hidden_size, "hybrid_override_pattern", c->pattern, "num_hidden_layers", c->n_layers,
                          "layer_norm_epsilon", (double)c->norm_eps, "tie_word_embeddings", 0, "bos_token_id",
                          c->bos_token_id, "pad_token_id", c->pad_token_id, "max_position_embeddings",
                          c->max_position_embeddings);
    if (!j) return NULL;
#define SETI(k, v) json_object_set_new(j, k, json_integer(v))
    if (c->n_eos) SETI("eos_token_id", c->eos_token_ids[0]);
    json_object_set_new(j, "torch_dtype", json_string("float32"));
    if (strchr(c->pattern, '*')) {
        SETI("num_attention_heads", c->num_attention_heads);
        SETI("num_key_value_heads", c->num_key_value_heads);
        SETI("head_dim", c->head_dim);
        json_object_set_new(j, "attention_bias", json_false());
    }
    if (strchr(c->pattern, 'M')) {
        SETI("mamba_num_heads", c->mamba_num_heads);
        SETI("mamba_head_dim", c->mamba_head_dim);
        SETI("ssm_state_size", c->ssm_state_size);
        SETI("n_groups", c->n_groups);
        SETI("conv_kernel", c->conv_kernel);
        json_object_set_new(j, "use_conv_bias", json_boolean(c->use_conv_bias));
        json_object_set_new(j, "mamba_hidden_act", json_string("silu"));
        json_object_set_new(j, "mamba_proj_bias", json_false());
        if (c->time_step_limit_min > 0 || isfinite(c->time_step_limit_max))
            json_object_set_new(j, "time_step_limit",
                                json_pack("[f,f]", (double)c->time_step_limit_min,
                                          isfinite(c->time_step_limit_max) ? (double)c->time_step_limit_max : 1e30));
    }
    if (strchr(c->pattern, '-')) {
        SETI("intermediate_size", c->intermediate_size);
        json_object_set_new(j, "mlp_hidden_act", json_string("relu2"));
    }
    if (strchr(c->pattern, 'E')) {
        SETI("n_routed_experts", c->n_routed_experts);
        SETI("num_experts_per_tok", c->num_experts_per_tok);
        SETI("moe_intermediate_size", c->moe_intermediate_size);
        SETI("n_shared_experts", c->n_shared_experts);
        SETI("moe_shared_expert_intermediate_size", c->moe_shared_expert_intermediate_size);
        SETI("n_group", c->n_group);
        SETI("topk_group", c->topk_group);
        json_object_set_new(j, "norm_topk_prob", json_boolean(c->norm_topk_prob));
        json_object_set_new(j, "routed_scaling_factor", json_real(c->routed_scaling_factor));
    }
#undef SETI
    char *s = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    return s;
}

/* model.safetensors (F32, checkpoint order) into an open st_outdir. */
static st_status write_weights(const st_tmodel *m, const char *dir) {
    st_sf_writer *w = NULL;
    st_status rc = st_sf_writer_new(&w);
    for (int i = 0; !rc && i < m->n_p; i++) {
        const st_tparam *t = &m->p[i];
        rc = st_sf_writer_add(w, t->name, ST_DT_F32, t->ndim, t->shape);
    }
    if (!rc) rc = st_sf_writer_meta(w, "format", "pt");
    char path[3400];
    if (!rc && st_pathf(path, sizeof path, "%s/model.safetensors", dir)) rc = st_err(ST_ERR_ARG, "%s: path too long", dir);
    if (!rc) rc = st_sf_writer_begin(w, path);
    for (int i = 0; !rc && i < m->n_p; i++) rc = st_sf_writer_write(w, m->w + m->p[i].off, m->p[i].numel * sizeof(float));
    if (!rc) rc = st_sf_writer_finish(w);
    st_sf_writer_free(w);
    return rc;
}

st_status st_tmodel_write_into(const st_tmodel *m, const st_outdir *o) {
    char *cj = st_config_to_json(&m->cfg);
    if (!cj) return st_err(ST_ERR_NOMEM, "train: cannot build config.json");
    st_status rc = st_outdir_write(o, "config.json", cj, strlen(cj));
    free(cj);
    if (!rc) rc = write_weights(m, o->tmp);
    return rc;
}

st_status st_tmodel_save(const st_tmodel *m, const char *dir, const char *tokenizer_dir, int force) {
    st_outdir o;
    st_status rc = st_outdir_begin(&o, dir, force);
    if (rc) return rc;
    rc = st_tmodel_write_into(m, &o);
    if (!rc && tokenizer_dir) rc = st_outdir_copy_side_files(&o, tokenizer_dir);
    if (!rc) rc = st_outdir_commit(&o);
    if (rc) st_outdir_abort(&o);
    return rc;
}
