/* info.c — `starling info -m DIR`: config, layer pattern and every budget's size. */
#include "cli.h"

#include <getopt.h>
int cli_info_gguf(const char *path); /* info_gguf.c */
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: starling info -m DIR [--budget B]\n       starling info -m FILE.gguf\n\n"
               "Print the checkpoint's config, its layer pattern, and for the full model and each\n"
               "budget (named in config.json's elastic block, or given with --budget) the widths,\n"
               "total and active parameters and weight bytes.\n\n"
               "  -m, --model DIR    Hugging Face checkpoint directory (or a .gguf file: its keys,\n"
               "                     tokenizer and tensors)\n"
               "  -b, --budget B     also show this budget (name, k=v list or @file.json)\n"
               "      --budget-file F    budget widths from a JSON file\n"
               "  -h, --help         this help\n");
}

static const char *human(double v, char *buf, size_t n) {
    if (v >= 1e9) snprintf(buf, n, "%.2fB", v / 1e9);
    else if (v >= 1e6) snprintf(buf, n, "%.2fM", v / 1e6);
    else if (v >= 1e3) snprintf(buf, n, "%.1fK", v / 1e3);
    else snprintf(buf, n, "%.0f", v);
    return buf;
}

static const char *bytes(double v, char *buf, size_t n) {
    if (v >= 1 << 30) snprintf(buf, n, "%.2f GiB", v / (1 << 30));
    else if (v >= 1 << 20) snprintf(buf, n, "%.2f MiB", v / (1 << 20));
    else snprintf(buf, n, "%.1f KiB", v / 1024);
    return buf;
}

static void row(const st_budget *b, const st_config *c) {
    const st_widths *w = st_budget_widths(b);
    st_budget_stats s;
    st_budget_stats_get(b, &s);
    char t[32], a[32], wb[32], ab[32];
    printf("  %-8s %-10s %-10s %-12s %-12s hidden=%d", st_budget_name(b), human(s.total_params, t, sizeof t),
           human(s.active_params, a, sizeof a), bytes(s.weight_bytes, wb, sizeof wb), bytes(s.active_bytes, ab, sizeof ab),
           w->hidden_size);
    if (strchr(c->pattern, '*')) printf(" attn_heads=%d", w->num_attention_heads);
    if (strchr(c->pattern, 'M')) printf(" mamba_heads=%d mamba_head_dim=%d", w->mamba_num_heads, w->mamba_head_dim);
    if (strchr(c->pattern, 'E'))
        printf(" experts=%d top_k=%d moe_ffn=%d shared_ffn=%d", w->n_routed_experts, st_budget_top_k(b),
               w->moe_intermediate_size, w->moe_shared_expert_intermediate_size);
    if (strchr(c->pattern, '-')) printf(" ffn=%d", w->intermediate_size);
    if (w->n_skip) {
        printf(" skip_layers=");
        for (int i = 0; i < w->n_skip; i++) printf("%s%d", i ? ":" : "", w->skip_layers[i]);
    }
    printf("\n");
}

int cmd_info(int argc, char **argv) {
    const char *dir = NULL, *extra = NULL;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"budget", required_argument, 0, 'b'}, {"budget-file", required_argument, 0, 'B'}, {"help", no_argument, 0, 'h'}, {0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":m:b:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': dir = optarg; break;
        case 'b': extra = optarg; break;
        case 'B': extra = cli_budget_file(optarg); break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage("info", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage("info", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("info", "unexpected argument '%s'", argv[optind]);
    if (!dir) return cli_usage("info", "-m DIR is required");
    size_t dl = strlen(dir);
    if (dl > 5 && !strcmp(dir + dl - 5, ".gguf")) return cli_info_gguf(dir); /* a GGUF export */
    st_model *m;
    if (cli_load("info", dir, NULL, &m, NULL)) return 1;
    const st_config *c = st_model_config(m);
    int nM = 0, nA = 0, nE = 0, nD = 0;
    for (int i = 0; i < c->n_layers; i++) {
        char t = c->pattern[i];
        nM += t == 'M'; nA += t == '*'; nE += t == 'E'; nD += t == '-';
    }
    printf("model      %s\n", dir);
    printf("layers     %d  (%d Mamba-2, %d attention, %d MoE, %d MLP)\n", c->n_layers, nM, nA, nE, nD);
    printf("pattern    %s\n", c->pattern);
    printf("hidden     %d   vocab %d   norm eps %g   tied embeddings %s\n", c->hidden_size, c->vocab_size,
           (double)c->norm_eps, c->tie_word_embeddings ? "yes" : "no");
    if (nM)
        printf("mamba      %d heads x %d dim, %d groups, state %d, conv %d\n", c->mamba_num_heads, c->mamba_head_dim,
               c->n_groups, c->ssm_state_size, c->conv_kernel);
    if (nA)
        printf("attention  %d query heads, %d KV heads, head dim %d (no RoPE)\n", c->num_attention_heads,
               c->num_key_value_heads, c->head_dim);
    if (nE)
        printf("moe        %d experts, top-%d, expert ffn %d, shared ffn %d, scaling %g, norm_topk %s\n",
               c->n_routed_experts, c->num_experts_per_tok, c->moe_intermediate_size,
               c->moe_shared_expert_intermediate_size, (double)c->routed_scaling_factor, c->norm_topk_prob ? "yes" : "no");
    if (nD) printf("mlp        ffn %d (relu^2)\n", c->intermediate_size);
    printf("eos ids   ");
    for (int i = 0; i < c->n_eos; i++) printf(" %d", c->eos_token_ids[i]);
    printf("\n\nbudgets%s\n", st_model_default_budget(m) ? "" : "  (no elastic block: full model only)");
    printf("  %-8s %-10s %-10s %-12s %-12s widths\n", "name", "total", "active", "weights", "read/token");
    int rc = 0;
    st_budget *b;
    if (st_budget_by_name(m, "full", &b) == ST_OK) { row(b, c); st_budget_free(b); }
    for (int i = 0; i < st_model_n_budgets(m); i++) {
        if (st_budget_by_name(m, st_model_budget_name(m, i), &b)) { rc = cli_fail_st("info", ST_ERR_BUDGET); break; }
        row(b, c);
        st_budget_free(b);
    }
    if (!rc && extra) {
        st_status s = st_budget_resolve(m, extra, &b);
        if (s) rc = cli_fail_st("info", s);
        else { row(b, c); st_budget_free(b); }
    }
    if (st_model_default_budget(m)) printf("default budget: %s\n", st_model_default_budget(m));
    st_model_free(m);
    return rc;
}
