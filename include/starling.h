/*
 * starling.h — one checkpoint, many models.
 *
 * The public C API of libstarling: load a Nemotron-H checkpoint once (weights
 * mmap'd, shared, read-only), pick any nested budget as a cheap view over those
 * weights, and run many sequences, each with its own state, at any budget.
 *
 *   st_model   weights + config, read-only after load, shareable across threads
 *   st_budget  a validated set of widths over one model (a view, no weight copy)
 *   st_state   one sequence: conv + SSM states, KV cache, position
 *
 * Every function that can fail returns an st_status (0 = ST_OK). On failure the
 * calling thread's last error message (st_last_error) names the file, tensor or
 * rule at fault. The library never exits the process and never prints.
 *
 * Spelling: st_X_default_params() returns a parameter struct holding the
 * defaults, by value; st_X_init(p) fills storage the caller owns; st_X_new
 * allocates and st_X_free releases.
 */
#ifndef STARLING_H
#define STARLING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ST_VERSION "0.1.0"

/* ------------------------------------------------------------------ errors */

typedef enum {
    ST_OK = 0,
    ST_ERR_IO = 1,        /* open/read/write/mmap failed                      */
    ST_ERR_FORMAT = 2,    /* malformed file: safetensors, JSON, tokenizer     */
    ST_ERR_SHAPE = 3,     /* tensor shape disagrees with config               */
    ST_ERR_MISSING = 4,   /* required tensor / key / file absent              */
    ST_ERR_BUDGET = 5,    /* budget breaks a nesting rule                     */
    ST_ERR_ARG = 6,       /* bad argument from the caller                     */
    ST_ERR_NOMEM = 7,     /* allocation failed                                */
    ST_ERR_UNSUPPORTED = 8, /* valid input we do not handle (dtype, feature)  */
    ST_ERR_RANGE = 9,     /* token id / position / context out of range       */
} st_status;

/* Message for the last failure on this thread ("" if none). */
const char *st_last_error(void);
const char *st_status_name(st_status s);

/* ------------------------------------------------------------------ config */

enum { ST_LAYER_MAMBA = 'M', ST_LAYER_ATTN = '*', ST_LAYER_MLP = '-', ST_LAYER_MOE = 'E' };

#define ST_MAX_LAYERS 1024

/* The elastic axes: the widths a budget can cut (docs/architecture.md §6.1).
 * Every width keeps a prefix of the ranked order: hidden channels, expert /
 * FFN neurons and experts a plain prefix; Mamba heads the first w/G of each
 * group; attention query heads the first w/n_kv of each KV group; Mamba head
 * channels the first w of every head. st_axis_key names each one. */
typedef enum {
    ST_AX_HIDDEN,      /* hidden_size                                     */
    ST_AX_MAMBA_HEADS, /* mamba_num_heads (total, multiple of n_groups)   */
    ST_AX_MAMBA_DIM,   /* mamba_head_dim                                  */
    ST_AX_ATTN_HEADS,  /* num_attention_heads (total, multiple of n_kv)   */
    ST_AX_EXPERTS,     /* n_routed_experts (top-k clipped to it)          */
    ST_AX_EXPERT_FFN,  /* moe_intermediate_size                           */
    ST_AX_SHARED_FFN,  /* moe_shared_expert_intermediate_size             */
    ST_AX_FFN,         /* intermediate_size (dense '-' layers)            */
    ST_N_AX
} st_axis;

/* The config.json key of axis k ("hidden_size", ...); "?" out of range. */
const char *st_axis_key(int k);

/* A budget's widths. In a budget, a value of 0 means "parent's width".
 * Key names follow config.json (see st_widths_set). The widths of the axes
 * are one array: w.axis[ST_AX_HIDDEN] is w.hidden_size, and so on. */
typedef struct {
    union {
        struct {                             /* in st_axis order */
            int hidden_size;
            int mamba_num_heads;             /* total Mamba heads, cut per group   */
            int mamba_head_dim;
            int num_attention_heads;         /* total query heads, cut per KV group */
            int n_routed_experts;
            int moe_intermediate_size;
            int moe_shared_expert_intermediate_size;
            int intermediate_size;           /* dense MLP ('-') layers             */
        };
        int axis[ST_N_AX];                   /* the same widths by st_axis         */
    };
    int num_experts_per_tok;                 /* 0: parent's, clipped to the kept experts;
                                                explicit values above them are rejected */
    int n_skip;                              /* number of skipped layers           */
    int skip_layers[ST_MAX_LAYERS];          /* parent layer indices, ascending    */
} st_widths;

typedef struct {
    /* shape */
    int vocab_size, hidden_size, n_layers;
    char pattern[ST_MAX_LAYERS + 1];         /* one of M * - E per layer            */
    /* attention */
    int num_attention_heads, num_key_value_heads, head_dim;
    /* mamba */
    int mamba_num_heads, mamba_head_dim, ssm_state_size, n_groups, conv_kernel;
    int use_conv_bias;
    float time_step_limit_min, time_step_limit_max; /* dt clamp; default (0, inf) */
    /* mlp / moe */
    int intermediate_size;
    int n_routed_experts, num_experts_per_tok, moe_intermediate_size;
    int n_shared_experts, moe_shared_expert_intermediate_size;
    int n_group, topk_group, norm_topk_prob;
    float routed_scaling_factor;
    /* misc */
    float norm_eps;
    int tie_word_embeddings;
    int bos_token_id, pad_token_id;
    int n_eos; int eos_token_ids[8];         /* config + generation_config        */
    int max_position_embeddings;
} st_config;

/* ------------------------------------------------------------------ model */

typedef struct st_model st_model;
typedef struct st_budget st_budget;
typedef struct st_state st_state;

/* Load a Hugging Face checkpoint directory (config.json + model.safetensors or
 * shards with model.safetensors.index.json). Weights are mmap'd, never copied. */
st_status st_model_load(const char *dir, st_model **out);
void st_model_free(st_model *m);
const st_config *st_model_config(const st_model *m);
const char *st_model_dir(const st_model *m);

/* Named budgets from the checkpoint's `elastic` block (none: 0). */
int st_model_n_budgets(const st_model *m);
const char *st_model_budget_name(const st_model *m, int i);
/* The default budget's name from the elastic block, or NULL. */
const char *st_model_default_budget(const st_model *m);

/* ------------------------------------------------------------------ budgets */

/* Parse "key=value,key=value" (config key names; skip_layers=2:6:7) into w,
 * starting from w's current contents. Unknown keys are an error. */
st_status st_widths_parse(st_widths *w, const char *spec);
/* Read a budget JSON object (config key names) from a file. */
st_status st_widths_from_file(st_widths *w, const char *path);
/* Set one width by config key name ("hidden_size", ...). */
st_status st_widths_set(st_widths *w, const char *key, long value);

/* Validate widths against the model and build a view. Zero widths mean the
 * parent's. Fails with ST_ERR_BUDGET and a message naming the broken rule. */
st_status st_budget_new(const st_model *m, const st_widths *w, st_budget **out);
/* Budget by name from the elastic block; "full" or NULL = the parent. */
st_status st_budget_by_name(const st_model *m, const char *name, st_budget **out);
/* Resolve a CLI-style budget: a name, "full", "k=v,..." or "@file.json". */
st_status st_budget_resolve(const st_model *m, const char *spec, st_budget **out);
void st_budget_free(st_budget *b);
/* Effective widths (all filled in, top-k clipped). */
const st_widths *st_budget_widths(const st_budget *b);
int st_budget_top_k(const st_budget *b);
const char *st_budget_name(const st_budget *b); /* "full", a name, or "custom" */

typedef struct {
    double total_params;      /* every weight the sliced model would hold     */
    double active_params;     /* weights touched per token (top-k experts)    */
    double weight_bytes;      /* bytes of the sliced model's weights          */
    double active_bytes;      /* bytes read per decoded token                 */
} st_budget_stats;
void st_budget_stats_get(const st_budget *b, st_budget_stats *s);

/* ------------------------------------------------------------------ state */

/* A fresh sequence state for model m. max_ctx bounds the KV cache (0: the
 * config's max_position_embeddings). Memory grows as tokens arrive. */
st_status st_state_new(const st_model *m, int max_ctx, st_state **out);
void st_state_free(st_state *s);
void st_state_reset(st_state *s);
int st_state_pos(const st_state *s);
/* Copy src into dst (same model); for prompt caching / branching. */
st_status st_state_copy(st_state *dst, const st_state *src);

/* Hand a sequence's state over to another budget of the same model, so the
 * next st_forward at `to` continues from what `s`'s current budget computed
 * (elastic budget control, "transplant" mode). The KV cache always carries
 * over (K/V heads are never cut); conv/SSM states carry over only when both
 * budgets keep the same Mamba heads and head channels and skip the same
 * layers — otherwise ST_ERR_BUDGET says which width differs. */
st_status st_state_transplant(st_state *s, const st_budget *to);
/* Name of the budget the state was last run at (NULL if none yet). */
const char *st_state_budget(const st_state *s);

/* Run n tokens through the model at budget b, advancing state s.
 * logits: NULL, or [n_out × vocab] where n_out = n if all_logits else 1
 * (the last position). A state remembers the budget it was computed at; running
 * it at another budget is refused (ST_ERR_ARG) until st_state_reset. */
st_status st_forward(const st_budget *b, st_state *s, const int32_t *tokens, int n,
                     float *logits, int all_logits);

/* One sequence's share of a batched forward step. */
typedef struct {
    st_state *state;        /* distinct for every item of a call             */
    const int32_t *tokens;  /* its n_tokens new tokens (>= 1)                */
    int n_tokens;
    float *logits;          /* NULL, or [n_out × vocab] as for st_forward    */
    int all_logits;
} st_batch_item;
#define ST_BATCH_MAX 256

/* Run several sequences through one forward pass at budget b: decode steps
 * and prompt chunks of any lengths mixed, each advancing its own state. Every
 * weight matrix is streamed once for all rows (an MoE expert chosen by several
 * sequences is read once); conv, SSM scan and attention run per sequence over
 * its own state. Each item's result equals st_forward of it alone (up to the
 * rounding of row-blocked products). Sequences at other budgets go in another
 * call. All items are checked first: on an error no state has changed.
 * st_forward is the one-item case. */
st_status st_forward_batch(const st_budget *b, const st_batch_item *items, int n_items);

/* Number of threads the kernels use. st_set_threads sets the process
 * default (0 = all cores); it is the application's to set, library calls
 * never change it. st_set_local_threads sets a count for the kernels run
 * from the calling thread only (0 = back to the process default) and
 * returns the previous local count, to restore it:
 *     int prev = st_set_local_threads(4);  ...  st_set_local_threads(prev);
 * Library entry points that take a thread count (the train and elastify
 * configs' "threads") hold it this way for the length of the call.
 * st_get_threads: the calling thread's count, else the process default. */
void st_set_threads(int n);
int st_set_local_threads(int n);
int st_get_threads(void);

/* Monotonic wall-clock seconds (for timing in tools): the library's one
 * clock (st_time inside the library). */
double st_time_now(void);

/* CPU features the kernels found at run time ("avx512bf16 avx512f avx2 fma f16c"). */
const char *st_cpu_features(void);

/* ------------------------------------------------------------------ tokenizer */

typedef struct st_tokenizer st_tokenizer;

/* Load a Hugging Face tokenizer.json (byte-level BPE). */
st_status st_tokenizer_load(const char *path, st_tokenizer **out);
void st_tokenizer_free(st_tokenizer *t);
int st_tokenizer_vocab_size(const st_tokenizer *t);
/* Encode UTF-8 text. parse_special: added tokens written in the text become
 * their ids (otherwise they are encoded as plain text). *ids is malloc'd. */
st_status st_tokenize(const st_tokenizer *t, const char *text, size_t len, int parse_special,
                      int32_t **ids, int *n_ids);
/* Bytes of one token as the decoder maps them (may be a partial UTF-8 char).
 * Returns the byte count, -1 for an unknown id, -2 out of memory. Writes at
 * most cap bytes. */
int st_token_bytes(const st_tokenizer *t, int32_t id, char *buf, int cap);
/* Decode a whole sequence to a malloc'd NUL-terminated string. */
st_status st_detokenize(const st_tokenizer *t, const int32_t *ids, int n, char **out);
/* Id of an exact token string (added or vocab), -1 if absent. */
int32_t st_token_id(const st_tokenizer *t, const char *str);
int st_token_is_special(const st_tokenizer *t, int32_t id);

/* ------------------------------------------------------------------ chat */

typedef struct {
    const char *role;               /* "system", "user", "assistant", "tool" */
    const char *content;
    const char *reasoning_content;  /* assistant only, may be NULL */
} st_chat_msg;

/* Render the Nemotron 3 chat template (ChatML with <think>) to a malloc'd
 * string. enable_thinking: generation prompt opens "<think>\n"; otherwise
 * "<think></think>". add_generation_prompt: end with the assistant header. */
st_status st_chat_render(const st_chat_msg *msgs, int n, int add_generation_prompt,
                         int enable_thinking, char **out);

/* ------------------------------------------------------------------ sampling */

typedef struct {
    float temperature;      /* 0 = greedy                                   */
    int top_k;              /* 0 = off                                      */
    float top_p;            /* 1 = off                                      */
    float min_p;            /* 0 = off                                      */
    float repeat_penalty;   /* 1 = off                                      */
    int repeat_last_n;      /* window for the penalty (64)                  */
    uint64_t seed;
} st_sampler_params;

typedef struct st_sampler st_sampler;
st_sampler_params st_sampler_default_params(void);
st_status st_sampler_new(const st_sampler_params *p, int vocab_size, st_sampler **out);
void st_sampler_free(st_sampler *s);
/* Pick a token from logits[vocab]; the logits buffer may be modified. */
int32_t st_sample(st_sampler *s, float *logits);
/* Record an emitted or prompt token (for the repetition penalty window). */
void st_sampler_accept(st_sampler *s, int32_t id);

#ifdef __cplusplus
}
#endif
#endif /* STARLING_H */
