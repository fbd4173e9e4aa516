/*
 * config.c — Nemotron-H config.json → st_config, including the legacy key
 * aliases (mamba_n_groups, mamba_d_conv, ...), the two layer-pattern forms
 * (hybrid_override_pattern string or layers_block_type list) and starling's
 * `elastic` block of named budgets.
 */
#include "model/model.h"
#include "util/util.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>

/* First present key among a NULL-terminated list of aliases. */
static json_t *get_any(json_t *o, const char *const *keys, const char **which) {
    for (; *keys; keys++) {
        json_t *v = json_object_get(o, *keys);
        if (v && !json_is_null(v)) { if (which) *which = *keys; return v; }
    }
    return NULL;
}

static st_status get_int(json_t *o, const char *path, const char *const *keys, int required, int def,
                         int *out) {
    const char *k = keys[0];
    json_t *v = get_any(o, keys, &k);
    if (!v) {
        if (required) return st_err(ST_ERR_MISSING, "%s: missing required key \"%s\"", path, keys[0]);
        *out = def;
        return ST_OK;
    }
    if (json_is_boolean(v)) { *out = json_is_true(v); return ST_OK; }
    if (!json_is_integer(v)) return st_err(ST_ERR_FORMAT, "%s: \"%s\" must be an integer", path, k);
    json_int_t x = json_integer_value(v);
    if (x < -1 || x > (1 << 30)) return st_err(ST_ERR_FORMAT, "%s: \"%s\" = %lld is out of range", path, k, (long long)x);
    *out = (int)x;
    return ST_OK;
}

static st_status get_float(json_t *o, const char *path, const char *const *keys, double def, float *out) {
    const char *k = keys[0];
    json_t *v = get_any(o, keys, &k);
    if (!v) { *out = (float)def; return ST_OK; }
    if (!json_is_number(v)) return st_err(ST_ERR_FORMAT, "%s: \"%s\" must be a number", path, k);
    *out = (float)json_number_value(v);
    return ST_OK;
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define TRY(x) do { st_status rc_ = (x); if (rc_) return rc_; } while (0)

static st_status parse_pattern(json_t *root, const char *path, st_config *c) {
    json_t *p = json_object_get(root, "hybrid_override_pattern");
    json_t *l = json_object_get(root, "layers_block_type");
    if (json_is_string(p)) {
        const char *s = json_string_value(p);
        size_t n = strlen(s);
        if (n == 0 || n > ST_MAX_LAYERS)
            return st_err(ST_ERR_FORMAT, "%s: hybrid_override_pattern has %zu layers (1..%d allowed)", path, n, ST_MAX_LAYERS);
        for (size_t i = 0; i < n; i++) {
            if (!strchr("M*-E", s[i]))
                return st_err(ST_ERR_FORMAT, "%s: hybrid_override_pattern: unknown layer type '%c' at %zu (expected M * - E)",
                              path, s[i], i);
            c->pattern[i] = s[i];
        }
        c->pattern[n] = 0;
    } else if (json_is_array(l)) {
        size_t n = json_array_size(l);
        if (n == 0 || n > ST_MAX_LAYERS)
            return st_err(ST_ERR_FORMAT, "%s: layers_block_type has %zu layers (1..%d allowed)", path, n, ST_MAX_LAYERS);
        for (size_t i = 0; i < n; i++) {
            const char *t = json_string_value(json_array_get(l, i));
            char ch = 0;
            if (!t) ch = 0;
            else if (!strcmp(t, "mamba") || !strcmp(t, "linear_attention") || !strcmp(t, "mamba2")) ch = 'M';
            else if (!strcmp(t, "attention") || !strcmp(t, "full_attention")) ch = '*';
            else if (!strcmp(t, "mlp")) ch = '-';
            else if (!strcmp(t, "moe")) ch = 'E';
            if (!ch) return st_err(ST_ERR_FORMAT, "%s: layers_block_type[%zu]: unknown layer type %s%s%s", path, i,
                                   t ? "\"" : "", t ? t : "(not a string)", t ? "\"" : "");
            c->pattern[i] = ch;
        }
        c->pattern[n] = 0;
    } else {
        return st_err(ST_ERR_MISSING, "%s: needs hybrid_override_pattern (string) or layers_block_type (list)", path);
    }
    return ST_OK;
}

void st_config_add_eos(st_config *c, json_t *v) {
    if (json_is_integer(v)) {
        int id = (int)json_integer_value(v);
        for (int i = 0; i < c->n_eos; i++) if (c->eos_token_ids[i] == id) return;
        if (c->n_eos < 8) c->eos_token_ids[c->n_eos++] = id;
    } else if (json_is_array(v)) {
        size_t i; json_t *x;
        json_array_foreach(v, i, x) st_config_add_eos(c, x);
    }
}

st_status st_config_parse(json_t *root, const char *path, st_config *c) {
    memset(c, 0, sizeof *c);
    if (!json_is_object(root)) return st_err(ST_ERR_FORMAT, "%s: not a JSON object", path);
    json_t *mt = json_object_get(root, "model_type");
    if (mt && json_is_string(mt) && strcmp(json_string_value(mt), "nemotron_h") != 0)
        return st_err(ST_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not nemotron_h", path, json_string_value(mt));
    json_t *lat = json_object_get(root, "moe_latent_size");
    if (lat && !json_is_null(lat))
        return st_err(ST_ERR_UNSUPPORTED, "%s: moe_latent_size (latent MoE, Nemotron 3 Super/Ultra) is not supported yet", path);
    TRY(parse_pattern(root, path, c));
    c->n_layers = (int)strlen(c->pattern);
    int nl;
    TRY(get_int(root, path, KEYS("num_hidden_layers"), 0, c->n_layers, &nl));
    if (nl != c->n_layers)
        return st_err(ST_ERR_FORMAT, "%s: num_hidden_layers = %d but the layer pattern has %d layers", path, nl, c->n_layers);
    TRY(get_int(root, path, KEYS("vocab_size"), 1, 0, &c->vocab_size));
    TRY(get_int(root, path, KEYS("hidden_size"), 1, 0, &c->hidden_size));
    int has[128] = {0};
    for (int i = 0; i < c->n_layers; i++) has[(int)c->pattern[i]] = 1;
    /* attention */
    TRY(get_int(root, path, KEYS("num_attention_heads"), has['*'], 0, &c->num_attention_heads));
    TRY(get_int(root, path, KEYS("num_key_value_heads"), 0, c->num_attention_heads, &c->num_key_value_heads));
    TRY(get_int(root, path, KEYS("head_dim", "attention_head_dim"), 0,
                c->num_attention_heads ? c->hidden_size / c->num_attention_heads : 0, &c->head_dim));
    /* mamba */
    TRY(get_int(root, path, KEYS("mamba_num_heads"), has['M'], 0, &c->mamba_num_heads));
    TRY(get_int(root, path, KEYS("mamba_head_dim", "mamba_headdim"), has['M'], 0, &c->mamba_head_dim));
    TRY(get_int(root, path, KEYS("ssm_state_size", "mamba_d_state"), has['M'], 0, &c->ssm_state_size));
    TRY(get_int(root, path, KEYS("n_groups", "mamba_n_groups"), 0, 1, &c->n_groups));
    TRY(get_int(root, path, KEYS("conv_kernel", "mamba_d_conv"), 0, 4, &c->conv_kernel));
    TRY(get_int(root, path, KEYS("use_conv_bias", "mamba_conv_bias"), 0, 1, &c->use_conv_bias));
    c->time_step_limit_min = 0.0f;
    c->time_step_limit_max = INFINITY;
    json_t *lim = get_any(root, KEYS("time_step_limit", "mamba_dt_limit"), NULL);
    if (lim) {
        if (!json_is_array(lim) || json_array_size(lim) != 2 || !json_is_number(json_array_get(lim, 0)))
            return st_err(ST_ERR_FORMAT, "%s: time_step_limit must be [min, max]", path);
        c->time_step_limit_min = (float)json_number_value(json_array_get(lim, 0));
        json_t *mx = json_array_get(lim, 1);
        /* Python's float("inf") serialises as Infinity, which is not JSON; jansson
           rejects it earlier, so a huge number or a string "inf" both mean no cap. */
        c->time_step_limit_max = json_is_number(mx) ? (float)json_number_value(mx) : INFINITY;
    }
    /* mlp / moe */
    TRY(get_int(root, path, KEYS("intermediate_size"), has['-'], 0, &c->intermediate_size));
    TRY(get_int(root, path, KEYS("n_routed_experts", "num_experts"), has['E'], 0, &c->n_routed_experts));
    TRY(get_int(root, path, KEYS("num_experts_per_tok"), has['E'], 0, &c->num_experts_per_tok));
    TRY(get_int(root, path, KEYS("moe_intermediate_size"), has['E'], 0, &c->moe_intermediate_size));
    TRY(get_int(root, path, KEYS("n_shared_experts"), 0, has['E'], &c->n_shared_experts));
    TRY(get_int(root, path, KEYS("moe_shared_expert_intermediate_size"), c->n_shared_experts > 0 && has['E'], 0,
                &c->moe_shared_expert_intermediate_size));
    TRY(get_int(root, path, KEYS("n_group"), 0, 1, &c->n_group));
    TRY(get_int(root, path, KEYS("topk_group"), 0, 1, &c->topk_group));
    TRY(get_int(root, path, KEYS("norm_topk_prob"), 0, 1, &c->norm_topk_prob));
    TRY(get_float(root, path, KEYS("routed_scaling_factor"), 1.0, &c->routed_scaling_factor));
    TRY(get_float(root, path, KEYS("layer_norm_epsilon", "norm_eps", "rms_norm_eps"), 1e-5, &c->norm_eps));
    TRY(get_int(root, path, KEYS("tie_word_embeddings"), 0, 0, &c->tie_word_embeddings));
    TRY(get_int(root, path, KEYS("bos_token_id"), 0, -1, &c->bos_token_id));
    TRY(get_int(root, path, KEYS("pad_token_id"), 0, -1, &c->pad_token_id));
    TRY(get_int(root, path, KEYS("max_position_embeddings"), 0, 1 << 20, &c->max_position_embeddings));
    st_config_add_eos(c, json_object_get(root, "eos_token_id"));

    /* sanity: every dimension positive where its layer type exists */
    struct { const char *k; int v; int need; } dims[] = {
        {"vocab_size", c->vocab_size, 1}, {"hidden_size", c->hidden_size, 1},
        {"num_attention_heads", c->num_attention_heads, has['*']},
        {"num_key_value_heads", c->num_key_value_heads, has['*']}, {"head_dim", c->head_dim, has['*']},
        {"mamba_num_heads", c->mamba_num_heads, has['M']}, {"mamba_head_dim", c->mamba_head_dim, has['M']},
        {"ssm_state_size", c->ssm_state_size, has['M']}, {"n_groups", c->n_groups, has['M']},
        {"conv_kernel", c->conv_kernel, has['M']}, {"intermediate_size", c->intermediate_size, has['-']},
        {"n_routed_experts", c->n_routed_experts, has['E']}, {"num_experts_per_tok", c->num_experts_per_tok, has['E']},
        {"moe_intermediate_size", c->moe_intermediate_size, has['E']},
        {"n_group", c->n_group, has['E']}, {"topk_group", c->topk_group, has['E']},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].need && dims[i].v <= 0)
            return st_err(ST_ERR_FORMAT, "%s: \"%s\" must be positive (got %d)", path, dims[i].k, dims[i].v);
    if (has['*'] && c->num_attention_heads % c->num_key_value_heads)
        return st_err(ST_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                      c->num_attention_heads, c->num_key_value_heads);
    if (has['M'] && c->mamba_num_heads % c->n_groups)
        return st_err(ST_ERR_FORMAT, "%s: mamba_num_heads %d is not a multiple of n_groups %d", path,
                      c->mamba_num_heads, c->n_groups);
    if (has['M'] && c->conv_kernel > 64)
        return st_err(ST_ERR_FORMAT, "%s: conv_kernel %d is implausible (max 64)", path, c->conv_kernel);
    if (has['E'] && c->num_experts_per_tok > c->n_routed_experts)
        return st_err(ST_ERR_FORMAT, "%s: num_experts_per_tok %d exceeds n_routed_experts %d", path,
                      c->num_experts_per_tok, c->n_routed_experts);
    if (has['E'] && (c->n_routed_experts % c->n_group || c->topk_group > c->n_group))
        return st_err(ST_ERR_FORMAT, "%s: n_group %d / topk_group %d do not divide %d experts", path, c->n_group,
                      c->topk_group, c->n_routed_experts);
    if (has['E'] && c->n_shared_experts > 1)
        return st_err(ST_ERR_UNSUPPORTED, "%s: n_shared_experts = %d (only 0 or 1 is supported)", path, c->n_shared_experts);
    return ST_OK;
}

/* ------------------------------------------------------------ widths / budgets */

/* Whether key names axis k (its config key or an alias). */
static int axis_named(int k, const char *key) {
    const st_axis_info *a = &st_axes[k];
    return !strcmp(key, a->key) || (a->alias[0] && !strcmp(key, a->alias[0])) || (a->alias[1] && !strcmp(key, a->alias[1]));
}

st_status st_widths_set(st_widths *w, const char *key, long value) {
    int *dst = NULL;
    for (int k = 0; k < ST_N_AX && !dst; k++)
        if (axis_named(k, key)) dst = &w->axis[k];
    if (!dst && (!strcmp(key, "num_experts_per_tok") || !strcmp(key, "top_k") || !strcmp(key, "topk")))
        dst = &w->num_experts_per_tok;
    if (!dst) {
        char known[512];
        size_t at = 0;
        for (int k = 0; k < ST_N_AX; k++) at += (size_t)snprintf(known + at, sizeof known - at, "%s, ", st_axes[k].key);
        return st_err(ST_ERR_BUDGET, "budget: unknown key \"%s\" (known: %snum_experts_per_tok, skip_layers)", key, known);
    }
    if (value < 1 || value > (1 << 30))
        return st_err(ST_ERR_BUDGET, "budget: %s = %ld must be a positive width%s", key, value,
                      value > 0 ? " (at most 1073741824)" : "");
    *dst = (int)value;
    return ST_OK;
}

static st_status add_skip(st_widths *w, long v) {
    if (v < 0 || v >= ST_MAX_LAYERS) return st_err(ST_ERR_BUDGET, "budget: skip_layers entry %ld out of range", v);
    for (int i = 0; i < w->n_skip; i++)
        if (w->skip_layers[i] == v) return st_err(ST_ERR_BUDGET, "budget: layer %ld listed twice in skip_layers", v);
    if (w->n_skip >= ST_MAX_LAYERS) return st_err(ST_ERR_BUDGET, "budget: too many skip_layers");
    /* keep ascending */
    int i = w->n_skip++;
    while (i > 0 && w->skip_layers[i - 1] > v) { w->skip_layers[i] = w->skip_layers[i - 1]; i--; }
    w->skip_layers[i] = (int)v;
    return ST_OK;
}

st_status st_widths_parse(st_widths *w, const char *spec) {
    char *s = st_strdup(spec), *save = NULL;
    if (!s) return ST_ERR_NOMEM;
    st_status rc = ST_OK;
    for (char *tok = strtok_r(s, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        char *eq = strchr(tok, '=');
        if (!eq) { rc = st_err(ST_ERR_BUDGET, "budget: \"%s\" is not key=value", tok); break; }
        *eq = 0;
        const char *val = eq + 1;
        if (!strcmp(tok, "skip_layers") || !strcmp(tok, "skip")) {
            w->n_skip = 0;
            char *vs = st_strdup(val), *sv2 = NULL;
            if (!vs) { rc = ST_ERR_NOMEM; break; }
            for (char *t = strtok_r(vs, ":;/ ", &sv2); t && !rc; t = strtok_r(NULL, ":;/ ", &sv2)) {
                char *end; long v = strtol(t, &end, 10);
                if (*end || end == t) rc = st_err(ST_ERR_BUDGET, "budget: skip_layers: \"%s\" is not a layer index", t);
                else rc = add_skip(w, v);
            }
            free(vs);
            continue;
        }
        char *end; long v = strtol(val, &end, 10);
        if (*end || end == val) { rc = st_err(ST_ERR_BUDGET, "budget: %s = \"%s\" is not an integer", tok, val); break; }
        rc = st_widths_set(w, tok, v);
    }
    free(s);
    return rc;
}

st_status st_widths_from_json(st_widths *w, json_t *obj, const char *ctx) {
    if (!json_is_object(obj)) return st_err(ST_ERR_BUDGET, "%s: a budget must be a JSON object", ctx);
    const char *k; json_t *v;
    json_object_foreach(obj, k, v) {
        if (!strcmp(k, "name") || !strcmp(k, "description") || k[0] == '_') continue;
        if (!strcmp(k, "skip_layers")) {
            if (!json_is_array(v)) return st_err(ST_ERR_BUDGET, "%s: skip_layers must be a list of layer indices", ctx);
            size_t i; json_t *x;
            w->n_skip = 0;
            json_array_foreach(v, i, x) {
                if (!json_is_integer(x)) return st_err(ST_ERR_BUDGET, "%s: skip_layers[%zu] is not an integer", ctx, i);
                st_status rc = add_skip(w, (long)json_integer_value(x));
                if (rc) return st_err_prefix(rc, "%s", ctx);
            }
            continue;
        }
        if (!json_is_integer(v)) return st_err(ST_ERR_BUDGET, "%s: \"%s\" must be an integer width", ctx, k);
        json_int_t x = json_integer_value(v);
        st_status rc = st_widths_set(w, k, x < LONG_MIN ? LONG_MIN : x > LONG_MAX ? LONG_MAX : (long)x);
        if (rc) return st_err_prefix(rc, "%s", ctx);
    }
    return ST_OK;
}

st_status st_widths_from_file(st_widths *w, const char *path) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root && json_error_code(&je) == json_error_cannot_open_file)
        return st_err(ST_ERR_MISSING, "budget file: %s", je.text);
    if (!root) return st_err(ST_ERR_FORMAT, "%s: %s (line %d, column %d)", path, je.text, je.line, je.column);
    st_status rc = st_widths_from_json(w, root, path);
    json_decref(root);
    return rc;
}

st_status st_elastic_parse(st_model *m, json_t *root, const char *path) {
    json_t *el = json_object_get(root, "elastic");
    if (!el || json_is_null(el)) return ST_OK;
    if (!json_is_object(el)) return st_err(ST_ERR_FORMAT, "%s: \"elastic\" must be an object", path);
    json_t *bl = json_object_get(el, "budgets");
    if (!json_is_array(bl)) return st_err(ST_ERR_FORMAT, "%s: elastic.budgets must be a list", path);
    size_t n = json_array_size(bl);
    m->budgets = st_calloc(n ? n : 1, sizeof *m->budgets);
    if (!m->budgets) return ST_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *b = json_array_get(bl, i);
        const char *name = json_string_value(json_object_get(b, "name"));
        if (!name || !*name) return st_err(ST_ERR_FORMAT, "%s: elastic.budgets[%zu] has no name", path, i);
        for (int j = 0; j < m->n_budgets; j++)
            if (!strcmp(m->budgets[j].name, name))
                return st_err(ST_ERR_FORMAT, "%s: elastic budget \"%s\" defined twice", path, name);
        char ctx[300];
        snprintf(ctx, sizeof ctx, "%s: elastic budget \"%s\"", path, name);
        st_named_budget *nb = &m->budgets[m->n_budgets];
        memset(&nb->w, 0, sizeof nb->w);
        st_status rc = st_widths_from_json(&nb->w, b, ctx);
        if (rc) return rc;
        if (!(nb->name = st_strdup(name))) return ST_ERR_NOMEM;
        m->n_budgets++;
    }
    const char *def = json_string_value(json_object_get(el, "default_budget"));
    if (def) {
        int found = 0;
        for (int j = 0; j < m->n_budgets; j++) found |= !strcmp(m->budgets[j].name, def);
        if (!found) return st_err(ST_ERR_FORMAT, "%s: elastic.default_budget \"%s\" is not among the budgets", path, def);
        if (!(m->default_budget = st_strdup(def))) return ST_ERR_NOMEM;
    }
    return ST_OK;
}
