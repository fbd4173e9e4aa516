/*
 * loop.c — the pretraining loop: config file, token files, batches,
 * gradient accumulation, AdamW + schedule + clipping, MoE load balancing,
 * validation, checkpoint + resume, CSV log and SVG loss curve.
 *
 * Data: train.bin / val.bin are flat arrays of little-endian uint32 token ids
 * (no header; e.g. numpy: np.asarray(ids, dtype='<u4').tofile('train.bin')).
 * Document boundaries are whatever tokens the writer puts there (an EOS id).
 * A training sequence is a window of seq+1 consecutive ids (inputs, targets
 * shifted by one) at an offset drawn from hash(seed, step, micro, row), so a
 * batch depends only on its step: resume replays the exact batches.
 * Validation uses fixed consecutive windows from the start of val.bin.
 *
 * Checkpoint directory (written atomically): config.json + model.safetensors
 * (F32, HF names: `starling run -m DIR` loads it), tokenizer files when
 * known, optimizer.safetensors (AdamW m.<name>, v.<name>) and
 * train_state.json ({"step", "adam_t", "seed", "tokens"}).
 */
#include "train/train.h"
#include "io/outdir.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "util/killsafe.h"
#include "util/plot.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ config */

void st_train_cfg_init(st_train_cfg *c) {
    memset(c, 0, sizeof *c);
    c->batch = 8;
    c->seq = 256;
    c->accum = 1;
    c->opt = st_adamw_default_params();
    c->eval_every = 100;
    c->eval_batches = 8;
    c->ckpt_every = 0;
    c->log_every = 1;
    c->balance_rate = 1e-3f;
    c->seed = 1;
}

void st_train_cfg_free(st_train_cfg *c) {
    free(c->model_json); free(c->init_dir); free(c->tokenizer_dir);
    for (int i = 0; i < c->n_train; i++) free(c->train_bin[i]);
    free(c->val_bin); free(c->out_dir);
    memset(c, 0, sizeof *c);
}

/* path relative to the config file's directory unless absolute */
static char *rel_path(const char *base_dir, const char *p) {
    if (!p) return NULL;
    if (p[0] == '/' || !base_dir[0]) return st_strdup(p);
    size_t n = strlen(base_dir) + strlen(p) + 2;
    char *s = st_malloc(n);
    if (s) snprintf(s, n, "%s/%s", base_dir, p);
    return s;
}

static st_status num(json_t *o, const char *k, const char *path, double lo, double hi, double *out) {
    json_t *v = json_object_get(o, k);
    if (!v) return ST_OK;
    if (!json_is_number(v)) return st_err(ST_ERR_FORMAT, "%s: \"%s\" must be a number", path, k);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return st_err(ST_ERR_FORMAT, "%s: \"%s\" = %g is outside [%g, %g]", path, k, x, lo, hi);
    *out = x;
    return ST_OK;
}

st_status st_train_cfg_load(st_train_cfg *c, const char *path) { return st_train_cfg_load_ext(c, path, NULL); }

st_status st_train_cfg_load_ext(st_train_cfg *c, const char *path, const char *const *extra) {
    st_train_cfg_init(c);
    json_error_t je;
    json_t *r = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!r) return st_err(json_error_code(&je) == json_error_cannot_open_file ? ST_ERR_MISSING : ST_ERR_FORMAT,
                          "%s: %s (line %d)", path, je.text, je.line);
    st_status rc = ST_OK;
    char dir[2048];
    snprintf(dir, sizeof dir, "%s", path);
    char *sl = strrchr(dir, '/');
    if (sl) *sl = 0; else dir[0] = 0;
    static const char *known[] = {"model", "init", "tokenizer", "data", "batch", "seq", "accum", "steps", "lr",
                                  "min_lr", "warmup", "weight_decay", "beta1", "beta2", "eps", "grad_clip",
                                  "eval_every", "eval_batches", "ckpt_every", "log_every", "out", "seed",
                                  "threads", "balance_rate", NULL};
    const char *k; json_t *v;
    json_object_foreach(r, k, v) {
        int ok = k[0] == '_';
        for (int i = 0; known[i] && !ok; i++) ok = !strcmp(k, known[i]);
        for (int i = 0; extra && extra[i] && !ok; i++) ok = !strcmp(k, extra[i]);
        if (!ok) { rc = st_err(ST_ERR_FORMAT, "%s: unknown key \"%s\"", path, k); goto done; }
    }
    json_t *model = json_object_get(r, "model"), *init = json_object_get(r, "init");
    if (!!model == !!init) { rc = st_err(ST_ERR_FORMAT, "%s: give exactly one of \"model\" (a shape) or \"init\" (a checkpoint)", path); goto done; }
    if (model) {
        json_t *m2 = NULL;
        if (json_is_string(model)) { /* a config.json whose shape to train from scratch */
            char *mp = rel_path(dir, json_string_value(model));
            json_error_t je2;
            m2 = mp ? json_load_file(mp, 0, &je2) : NULL;
            if (!m2) { rc = st_err(ST_ERR_FORMAT, "%s: \"model\": %s: %s", path, mp ? mp : "?", mp ? je2.text : "no memory"); free(mp); goto done; }
            free(mp);
            json_object_del(m2, "elastic"); /* the shape only */
        } else if (json_is_object(model)) {
            m2 = json_deep_copy(model);
        } else { rc = st_err(ST_ERR_FORMAT, "%s: \"model\" must be an object or a config.json path", path); goto done; }
        if (!json_object_get(m2, "model_type")) json_object_set_new(m2, "model_type", json_string("nemotron_h"));
        c->model_json = json_dumps(m2, JSON_COMPACT);
        json_decref(m2);
        st_config tmp; /* validate now, with the file's name in the message */
        json_t *mj = json_loads(c->model_json, 0, NULL);
        rc = st_config_parse(mj, path, &tmp);
        json_decref(mj);
        if (rc) goto done;
    } else {
        if (!json_is_string(init)) { rc = st_err(ST_ERR_FORMAT, "%s: \"init\" must be a checkpoint directory", path); goto done; }
        c->init_dir = rel_path(dir, json_string_value(init));
    }
    json_t *tk = json_object_get(r, "tokenizer");
    if (tk) c->tokenizer_dir = rel_path(dir, json_string_value(tk));
    else if (c->init_dir) c->tokenizer_dir = st_strdup(c->init_dir);
    json_t *data = json_object_get(r, "data");
    if (!json_is_object(data)) { rc = st_err(ST_ERR_FORMAT, "%s: \"data\" must be {\"train\": ..., \"val\": ...}", path); goto done; }
    json_t *tr = json_object_get(data, "train");
    if (json_is_string(tr)) {
        c->train_bin[0] = rel_path(dir, json_string_value(tr));
        c->train_w[0] = 1;
        c->n_train = 1;
    } else if (json_is_array(tr) && json_array_size(tr) >= 1 && json_array_size(tr) <= 16) {
        size_t i; json_t *e;
        json_array_foreach(tr, i, e) {
            const char *p = json_string_value(json_object_get(e, "path"));
            json_t *w = json_object_get(e, "weight");
            if (!p || (w && !json_is_number(w))) { rc = st_err(ST_ERR_FORMAT, "%s: data.train[%zu] must be {\"path\": F, \"weight\": W}", path, i); goto done; }
            c->train_bin[c->n_train] = rel_path(dir, p);
            c->train_w[c->n_train] = w ? json_number_value(w) : 1.0;
            /* 0: a file only some elastic budgets draw from (their own "data") */
            if (!(c->train_w[c->n_train] >= 0 && c->train_w[c->n_train] < 1e12)) { rc = st_err(ST_ERR_FORMAT, "%s: data.train[%zu].weight must be >= 0", path, i); goto done; }
            c->n_train++;
        }
        double wsum = 0;
        for (int q = 0; q < c->n_train; q++) wsum += c->train_w[q];
        if (!(wsum > 0)) { rc = st_err(ST_ERR_FORMAT, "%s: data.train weights sum to 0", path); goto done; }
    } else { rc = st_err(ST_ERR_FORMAT, "%s: data.train must be a file or a list of 1..16 {path, weight}", path); goto done; }
    json_t *va = json_object_get(data, "val");
    if (va) c->val_bin = rel_path(dir, json_string_value(va));
    json_t *out = json_object_get(r, "out");
    if (!json_is_string(out)) { rc = st_err(ST_ERR_FORMAT, "%s: \"out\" (the run directory) is required", path); goto done; }
    c->out_dir = rel_path(dir, json_string_value(out));
    double x;
#define INT(key, field, lo, hi) x = c->field; if ((rc = num(r, key, path, lo, hi, &x))) goto done; c->field = (int)x;
#define FLT(key, field, lo, hi) x = c->field; if ((rc = num(r, key, path, lo, hi, &x))) goto done; c->field = (float)x;
    INT("batch", batch, 1, 1 << 16) INT("seq", seq, 1, 1 << 20) INT("accum", accum, 1, 1 << 16)
    INT("steps", opt.steps, 1, 1e9) INT("warmup", opt.warmup, 0, 1e9)
    FLT("lr", opt.lr, 0, 10) FLT("min_lr", opt.min_lr, 0, 10) FLT("weight_decay", opt.weight_decay, 0, 10)
    FLT("beta1", opt.beta1, 0, 0.999999) FLT("beta2", opt.beta2, 0, 0.999999999) FLT("eps", opt.eps, 0, 1)
    FLT("grad_clip", opt.grad_clip, 0, 1e9) INT("eval_every", eval_every, 0, 1e9) INT("eval_batches", eval_batches, 1, 1e6)
    INT("ckpt_every", ckpt_every, 0, 1e9) INT("log_every", log_every, 1, 1e9) INT("threads", threads, 0, 4096)
    FLT("balance_rate", balance_rate, 0, 1)
    x = (double)c->seed;
    if ((rc = num(r, "seed", path, 0, 9007199254740992.0, &x))) goto done;
    c->seed = (uint64_t)x;
#undef INT
#undef FLT
done:
    json_decref(r);
    if (rc) st_train_cfg_free(c);
    return rc;
}

/* ------------------------------------------------------------ token files */

st_status st_tokfile_open(st_tokfile *f, const char *path, int vocab) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return st_err(ST_ERR_MISSING, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) { close(fd); return st_err(ST_ERR_IO, "%s: %s", path, strerror(errno)); }
    if (sb.st_size % 4 || sb.st_size == 0) {
        close(fd);
        return st_err(ST_ERR_FORMAT, "%s: %lld bytes is not a non-empty array of uint32 token ids", path, (long long)sb.st_size);
    }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return st_err(ST_ERR_IO, "%s: mmap: %s", path, strerror(errno));
    f->map = p;
    f->bytes = (size_t)sb.st_size;
    f->ids = p;
    f->n = f->bytes / 4;
    for (size_t i = 0; i < f->n; i++) /* little-endian hosts only (x86-64, arm64) */
        if (f->ids[i] >= (uint32_t)vocab) {
            st_status rc = st_err(ST_ERR_RANGE, "%s: token %zu is %u, outside the model's vocabulary [0, %d)", path, i,
                                  f->ids[i], vocab);
            st_tokfile_close(f);
            return rc;
        }
    return ST_OK;
}

void st_tokfile_close(st_tokfile *f) {
    if (f->map) munmap(f->map, f->bytes);
    memset(f, 0, sizeof *f);
}

/* One micro-batch [B][T] of inputs and next-token targets for (step, micro). */
void st_train_sample_row(const st_train_cfg *c, const st_tokfile *tf, const double *cum, long step, int micro, int b,
                         int32_t *x, int32_t *y) {
    const int T = c->seq;
    uint64_t h = st_mix64(c->seed ^ st_mix64((uint64_t)step * 1000003ull + (uint64_t)micro * 7919ull + (uint64_t)b));
    double u = (double)(h >> 11) / 9007199254740992.0 * cum[c->n_train - 1];
    int fi = 0;
    while (fi + 1 < c->n_train && u >= cum[fi]) fi++; /* a 0-weight file is never picked */
    const st_tokfile *f = &tf[fi];
    size_t off = (size_t)(st_mix64(h) % (uint64_t)(f->n - (size_t)T));
    for (int t = 0; t < T; t++) {
        x[b * T + t] = (int32_t)f->ids[off + t];
        y[b * T + t] = (int32_t)f->ids[off + t + 1];
    }
}

void st_train_sample(const st_train_cfg *c, const st_tokfile *tf, const double *cum, long step, int micro,
                     int32_t *x, int32_t *y) {
    for (int b = 0; b < c->batch; b++) st_train_sample_row(c, tf, cum, step, micro, b, x, y);
}

double st_train_val_loss(st_tmodel *m, const st_train_cfg *c, const st_tokfile *vf, int32_t *x, int32_t *y) {
    const int B = c->batch, T = c->seq;
    size_t span = vf->n - (size_t)T; /* windows start in [0, span) */
    double sum = 0;
    for (int i = 0; i < c->eval_batches; i++) {
        for (int b = 0; b < B; b++) {
            size_t off = ((size_t)(i * B + b) * (size_t)T) % span;
            for (int t = 0; t < T; t++) { x[b * T + t] = (int32_t)vf->ids[off + t]; y[b * T + t] = (int32_t)vf->ids[off + t + 1]; }
        }
        sum += st_tmodel_forward(m, x, y);
    }
    return sum / c->eval_batches;
}

/* ------------------------------------------------------------ checkpoints */

static st_status save_ckpt(const st_tmodel *m, const st_adamw *opt, const st_train_cfg *c, long step, double tokens,
                           const char *dst) {
    st_outdir o;
    st_status rc = st_outdir_begin(&o, dst, 1);
    if (rc) return rc;
    rc = st_tmodel_write_into(m, &o);
    if (!rc && c->tokenizer_dir) rc = st_outdir_copy_side_files(&o, c->tokenizer_dir);
    /* optimizer moments, F32, m.<name> then v.<name> for trainable tensors */
    st_sf_writer *w = NULL;
    if (!rc) rc = st_sf_writer_new(&w);
    char nm[160];
    for (int pass = 0; !rc && pass < 2; pass++)
        for (int i = 0; !rc && i < m->n_p; i++) {
            if (!m->p[i].train) continue;
            snprintf(nm, sizeof nm, "%c.%s", pass ? 'v' : 'm', m->p[i].name);
            rc = st_sf_writer_add(w, nm, ST_DT_F32, m->p[i].ndim, m->p[i].shape);
        }
    char path[3400];
    if (!rc) { st_pathf(path, sizeof path, "%s/optimizer.safetensors", o.tmp); rc = st_sf_writer_begin(w, path); }
    for (int pass = 0; !rc && pass < 2; pass++)
        for (int i = 0; !rc && i < m->n_p; i++) {
            if (!m->p[i].train) continue;
            rc = st_sf_writer_write(w, (pass ? opt->v : opt->m) + m->p[i].off, m->p[i].numel * sizeof(float));
        }
    if (!rc) rc = st_sf_writer_finish(w);
    st_sf_writer_free(w);
    if (!rc) {
        char js[256];
        int n = snprintf(js, sizeof js, "{\n  \"step\": %ld,\n  \"adam_t\": %ld,\n  \"seed\": %llu,\n  \"tokens\": %.0f\n}\n",
                         step, opt->t, (unsigned long long)c->seed, tokens);
        rc = st_outdir_write(&o, "train_state.json", js, (size_t)n);
    }
    if (!rc) rc = st_outdir_commit(&o);
    if (rc) st_outdir_abort(&o);
    return rc;
}

static st_status load_optimizer(const st_tmodel *m, st_adamw *opt, const char *dir, long *step, double *tokens) {
    char path[3400];
    st_pathf(path, sizeof path, "%s/train_state.json", dir);
    json_error_t je;
    json_t *js = json_load_file(path, 0, &je);
    if (!js) return st_err(ST_ERR_MISSING, "%s: %s (is this a `starling train` checkpoint?)", path, je.text);
    json_t *s = json_object_get(js, "step"), *t = json_object_get(js, "adam_t"), *tk = json_object_get(js, "tokens");
    if (!json_is_integer(s) || !json_is_integer(t)) { json_decref(js); return st_err(ST_ERR_FORMAT, "%s: needs integer step and adam_t", path); }
    *step = (long)json_integer_value(s);
    opt->t = (long)json_integer_value(t);
    *tokens = json_is_number(tk) ? json_number_value(tk) : 0;
    json_decref(js);
    st_pathf(path, sizeof path, "%s/optimizer.safetensors", dir);
    st_sf_file *f;
    st_status rc = st_sf_open(path, &f);
    if (rc) return rc;
    char nm[160];
    for (int pass = 0; !rc && pass < 2; pass++)
        for (int i = 0; !rc && i < m->n_p; i++) {
            if (!m->p[i].train) continue;
            snprintf(nm, sizeof nm, "%c.%s", pass ? 'v' : 'm', m->p[i].name);
            const st_sf_tensor *te = NULL;
            for (int j = 0; j < f->n_tensors && !te; j++) if (!strcmp(f->tensors[j].name, nm)) te = &f->tensors[j];
            if (!te || te->dt != ST_DT_F32 || (size_t)st_sf_numel(te) != m->p[i].numel)
                rc = st_err(ST_ERR_MISSING, "%s: '%s' missing or not F32 of %zu elements", path, nm, m->p[i].numel);
            else memcpy((pass ? opt->v : opt->m) + m->p[i].off, te->data, m->p[i].numel * sizeof(float));
        }
    st_sf_close(f);
    return rc;
}

/* ------------------------------------------------------------ log + plot */

#define CSV_HEADER "step,tokens,loss,val_loss,lr,grad_norm,tok_per_s,elapsed_s,load_max_over_mean,load_cv\n"

/* Keep the rows of an existing log up to `step` (resume), or start a new one. */
static FILE *open_log(const char *path, long step) {
    char *old = NULL;
    size_t len = 0;
    if (step > 0 && st_read_file(path, &old, &len) == ST_OK) {
        FILE *f = fopen(path, "w");
        if (!f) { free(old); return NULL; }
        char *save = NULL;
        for (char *ln = strtok_r(old, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
            long s = strtol(ln, NULL, 10);
            if (!strncmp(ln, "step,", 5) || (s > 0 && s <= step)) fprintf(f, "%s\n", ln);
        }
        free(old);
        return f;
    }
    st_err_clear();
    FILE *f = fopen(path, "w");
    if (f) fputs(CSV_HEADER, f);
    return f;
}

/* loss.svg from log.csv: train loss (line) and validation loss (dots). */
static st_status write_svg(const char *csv, const char *svg) {
    char *txt = NULL;
    size_t len;
    st_status rc = st_read_file(csv, &txt, &len);
    if (rc) return rc;
    size_t rows = 1;
    for (size_t i = 0; i < len; i++) rows += txt[i] == '\n';
    /* [rows] each: step and train loss of the rows that have one; step and validation loss */
    double *S = st_malloc(4 * rows * sizeof(double)), *L = S + rows, *VS = L + rows, *VL = VS + rows;
    st_plot *p = st_plot_new(&(st_plot_axes){.title = "training loss", .xlabel = "step", .ylabel = "loss"});
    if (!S || !p) { free(txt); free(S); st_plot_free(p); return ST_ERR_NOMEM; }
    int n = 0, nv = 0;
    char *save = NULL;
    for (char *ln = strtok_r(txt, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(ln, "step", 4)) continue;
        double s, tk, l, v;
        if (sscanf(ln, "%lf,%lf,%lf,%lf", &s, &tk, &l, &v) != 4) continue;
        if (isfinite(l)) { S[n] = s; L[n] = l; n++; }
        if (v >= 0) { VS[nv] = s; VL[nv] = v; nv++; }
    }
    free(txt);
    st_plot_line(p, S, L, n, "#1f77b4", "train", 0);
    st_plot_dots(p, VS, VL, nv, "#d62728", "validation");
    rc = st_plot_write(p, svg);
    st_plot_free(p);
    free(S);
    return rc;
}

/* ------------------------------------------------------------ the loop */

static st_status train_run(const st_train_cfg *c, const char *resume_dir, st_train_cb cb, void *user) {
    st_status rc = ST_OK;
    st_tmodel *m = NULL;
    st_model *src = NULL;
    st_adamw opt = {0};
    st_tokfile tf[16] = {{0}}, vf = {0};
    int32_t *x = NULL, *y = NULL;
    FILE *log = NULL;
    long step = 0;
    double tokens = 0;
    char path[3400];

    /* model: resume > init checkpoint > shape */
    const char *from = resume_dir ? resume_dir : c->init_dir;
    if (from) {
        if ((rc = st_model_load(from, &src))) goto done;
        if ((rc = st_tmodel_new(st_model_config(src), &m))) goto done;
        if ((rc = st_tmodel_from_model(m, src))) goto done;
        st_model_free(src);
        src = NULL;
    } else {
        json_error_t je;
        json_t *j = json_loads(c->model_json, 0, &je);
        st_config cfg;
        rc = j ? st_config_parse(j, "train config \"model\"", &cfg) : st_err(ST_ERR_FORMAT, "model: %s", je.text);
        json_decref(j);
        if (rc) goto done;
        if ((rc = st_tmodel_new(&cfg, &m))) goto done;
        st_tmodel_init(m, c->seed);
    }
    const int V = m->cfg.vocab_size;
    if ((rc = st_adamw_new(&opt, m, &c->opt))) goto done;
    if (resume_dir && (rc = load_optimizer(m, &opt, resume_dir, &step, &tokens))) goto done;
    opt.o = c->opt;

    double cum[16];
    for (int i = 0; i < c->n_train; i++) {
        if ((rc = st_tokfile_open(&tf[i], c->train_bin[i], V))) goto done;
        if (tf[i].n <= (size_t)c->seq + 1) { rc = st_err(ST_ERR_FORMAT, "%s: %zu tokens, fewer than seq + 2", c->train_bin[i], tf[i].n); goto done; }
        cum[i] = (i ? cum[i - 1] : 0) + c->train_w[i];
    }
    if (c->val_bin && c->eval_every > 0) {
        if ((rc = st_tokfile_open(&vf, c->val_bin, V))) goto done;
        if (vf.n <= (size_t)c->seq + 1) { rc = st_err(ST_ERR_FORMAT, "%s: %zu tokens, fewer than seq + 2", c->val_bin, vf.n); goto done; }
    }
    if ((rc = st_tmodel_reserve(m, c->batch, c->seq))) goto done;
    x = st_malloc(sizeof(int32_t) * (size_t)c->batch * c->seq);
    y = st_malloc(sizeof(int32_t) * (size_t)c->batch * c->seq);
    if (!x || !y) { rc = ST_ERR_NOMEM; goto done; }
    if (mkdir(c->out_dir, 0755) != 0 && errno != EEXIST) { rc = st_err(ST_ERR_IO, "%s: %s", c->out_dir, strerror(errno)); goto done; }
    st_clean_stale(c->out_dir, NULL); /* temp dirs/files of a run killed with -9 */
    char csv[3400], svg[3400];
    st_pathf(csv, sizeof csv, "%s/log.csv", c->out_dir);
    st_pathf(svg, sizeof svg, "%s/loss.svg", c->out_dir);
    if (!(log = open_log(csv, step))) { rc = st_err(ST_ERR_IO, "%s: %s", csv, strerror(errno)); goto done; }

    const double tok_step = (double)c->batch * c->seq * c->accum;
    double t_start = st_time(), avg_dt = 0;
    long first = step;
    for (; step < c->opt.steps; step++) {
        double t0 = st_time();
        st_tmodel_zero_grad(m);
        st_tmodel_load_reset(m);
        double loss = 0;
        for (int mi = 0; mi < c->accum; mi++) {
            st_train_sample(c, tf, cum, step, mi, x, y);
            loss += st_tmodel_forward(m, x, y) / c->accum;
            st_tmodel_backward(m, 1.0f / (float)c->accum);
        }
        if (!isfinite(loss)) { rc = st_err(ST_ERR_RANGE, "train: loss is %g at step %ld (lower lr?)", loss, step + 1); goto done; }
        float lr = st_lr_at(&c->opt, step);
        double gn = st_adamw_step(&opt, m, lr);
        st_train_event ev = {.step = step + 1, .steps = c->opt.steps, .loss = loss, .val_loss = -1, .lr = lr, .grad_norm = gn};
        st_moe_load_stats(m, &ev.load_max_over_mean, &ev.load_cv);
        if (c->balance_rate > 0) st_moe_balance(m, c->balance_rate);
        tokens += tok_step;
        double dt = st_time() - t0;
        avg_dt = step == first ? dt : 0.9 * avg_dt + 0.1 * dt;
        ev.tok_per_s = tok_step / avg_dt;
        int last = step + 1 == c->opt.steps;
        if (vf.ids && ((step + 1) % c->eval_every == 0 || last)) ev.val_loss = st_train_val_loss(m, c, &vf, x, y);
        ev.elapsed_s = st_time() - t_start;
        ev.eta_s = avg_dt * (double)(c->opt.steps - step - 1);
        if ((step + 1) % c->log_every == 0 || last || ev.val_loss >= 0) {
            fprintf(log, "%ld,%.0f,%.6f,%.6f,%.6g,%.6g,%.1f,%.2f,%.4f,%.4f\n", step + 1, tokens, loss, ev.val_loss, (double)lr, gn,
                    ev.tok_per_s, ev.elapsed_s, ev.load_max_over_mean, ev.load_cv);
            fflush(log);
        }
        if ((c->ckpt_every > 0 && (step + 1) % c->ckpt_every == 0) || last) {
            if (last) st_pathf(path, sizeof path, "%s/final", c->out_dir);
            else st_pathf(path, sizeof path, "%s/step_%06ld", c->out_dir, step + 1);
            if ((rc = save_ckpt(m, &opt, c, step + 1, tokens, path))) goto done;
            ev.saved = 1;
        }
        if (ev.val_loss >= 0 || ev.saved || last) write_svg(csv, svg);
        if (cb) cb(&ev, user);
        st_killpoint();
    }
done:
    if (log) fclose(log);
    free(x); free(y);
    for (int i = 0; i < 16; i++) st_tokfile_close(&tf[i]);
    st_tokfile_close(&vf);
    st_adamw_free(&opt);
    st_model_free(src);
    st_tmodel_free(m);
    return rc;
}

/* The config's thread count holds for this call on this thread only. */
st_status st_train_run(const st_train_cfg *c, const char *resume_dir, st_train_cb cb, void *user) {
    int prev = c->threads > 0 ? st_set_local_threads(c->threads) : -1;
    st_status rc = train_run(c, resume_dir, cb, user);
    if (prev >= 0) st_set_local_threads(prev);
    return rc;
}

/* ------------------------------------------------------------ GEMM peak */

double st_measure_gemm_gflops(int n, int reps) {
    float *W = st_aligned_alloc((size_t)n * n * sizeof(float)), *X = st_aligned_alloc((size_t)n * n * sizeof(float));
    float *Y = st_aligned_alloc((size_t)n * n * sizeof(float));
    if (!W || !X || !Y) { free(W); free(X); free(Y); return -1; }
    for (size_t i = 0; i < (size_t)n * n; i++) { W[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f; X[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f; }
    st_mat w = {.dt = ST_DT_F32, .data = W, .rows = n, .cols = n, .scale = 1.0f};
    st_span s = {0, n};
    double best = 1e30;
    st_matmul(&w, &s, 1, &s, 1, X, n, Y, n, n, 0); /* warm up: page faults, scratch */
    for (int r = 0; r < reps; r++) {
        double t0 = st_time();
        st_matmul(&w, &s, 1, &s, 1, X, n, Y, n, n, 0);
        double dt = st_time() - t0;
        if (dt < best) best = dt;
    }
    free(W); free(X); free(Y);
    return 2.0 * n * (double)n * n / best / 1e9;
}

/* ------------------------------------------------------------ training speed */

st_train_bench_params st_train_bench_default_params(void) {
    return (st_train_bench_params){.batch = 8, .seq = 256, .steps = 5};
}

static const char *const BENCH_MODEL =
    "{\"model_type\":\"nemotron_h\",\"vocab_size\":8192,\"hidden_size\":768,\"hybrid_override_pattern\":\"MEM*EM\","
    "\"mamba_num_heads\":24,\"mamba_head_dim\":64,\"ssm_state_size\":64,\"n_groups\":4,\"conv_kernel\":4,"
    "\"num_attention_heads\":12,\"num_key_value_heads\":2,\"head_dim\":64,"
    "\"n_routed_experts\":8,\"num_experts_per_tok\":2,\"moe_intermediate_size\":1024,\"n_shared_experts\":1,"
    "\"moe_shared_expert_intermediate_size\":1024,\"routed_scaling_factor\":2.5,\"norm_topk_prob\":true}";

static st_status bench_config(const st_train_cfg *c, st_config *cfg) {
    if (c->init_dir) {
        st_model *src;
        st_status rc = st_model_load(c->init_dir, &src);
        if (rc) return rc;
        *cfg = *st_model_config(src);
        st_model_free(src);
        return ST_OK;
    }
    json_t *j = json_loads(c->model_json ? c->model_json : BENCH_MODEL, 0, NULL);
    st_status rc = st_config_parse(j, "bench model", cfg);
    json_decref(j);
    return rc;
}

static st_status train_bench(const st_train_cfg *c, const st_train_bench_params *p,
                             void (*cb)(const st_train_bench_event *e, void *user), void *user, st_train_bench_result *r) {
    memset(r, 0, sizeof *r);
    st_config cfg;
    st_tmodel *m = NULL;
    st_adamw opt = {0};
    int32_t *x = NULL, *y = NULL;
    st_status rc = bench_config(c, &cfg);
    if (rc || (rc = st_tmodel_new(&cfg, &m))) return rc;
    st_tmodel_init(m, 1);
    const int B = p->batch, T = p->seq, BT = B * T;
    st_adamw_opts oo = st_adamw_default_params();
    if ((rc = st_tmodel_reserve(m, B, T)) || (rc = st_adamw_new(&opt, m, &oo))) goto done;
    x = st_malloc(sizeof(int32_t) * (size_t)BT);
    y = st_malloc(sizeof(int32_t) * (size_t)BT);
    if (!x || !y) { rc = ST_ERR_NOMEM; goto done; }
    uint64_t s = 1;
    for (int i = 0; i < BT; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (int32_t)((s >> 33) % (uint64_t)cfg.vocab_size);
        y[i] = (int32_t)((s >> 13) % (uint64_t)cfg.vocab_size);
    }
    st_train_bench_event e = {.cfg = &cfg, .params = (double)m->n_w, .active_params = st_tmodel_active_params(m)};
    r->active_params = e.active_params;
    r->best_s = 1e30;
    if (cb) cb(&e, user);
    for (int i = 0; i < p->steps + 1; i++) {
        double t0 = st_time();
        st_tmodel_zero_grad(m);
        e.loss = st_tmodel_forward(m, x, y);
        double t1 = st_time();
        st_tmodel_backward(m, 1.0f);
        double t2 = st_time();
        st_adamw_step(&opt, m, 1e-4f);
        double t3 = st_time();
        if (i == 0) continue; /* warm-up step */
        e.step = i;
        e.step_s = t3 - t0; e.fwd_s = t1 - t0; e.bwd_s = t2 - t1; e.opt_s = t3 - t2;
        if (e.step_s < r->best_s) r->best_s = e.step_s;
        r->sum_s += e.step_s; r->fwd_s += e.fwd_s; r->bwd_s += e.bwd_s; r->opt_s += e.opt_s;
        r->n++;
        if (cb) cb(&e, user);
    }
done:
    free(x); free(y);
    st_adamw_free(&opt);
    st_tmodel_free(m);
    return rc;
}

st_status st_train_bench(const st_train_cfg *c, const st_train_bench_params *p,
                         void (*cb)(const st_train_bench_event *e, void *user), void *user, st_train_bench_result *r) {
    int prev = c->threads > 0 ? st_set_local_threads(c->threads) : -1;
    st_status rc = train_bench(c, p, cb, user, r);
    if (prev >= 0) st_set_local_threads(prev);
    return rc;
}
