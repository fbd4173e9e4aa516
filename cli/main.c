/* main.c — `starling SUBCOMMAND ...`: dispatch to cli/<subcommand>.c. */
#include "cli.h"

#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} g_cmds[] = {
    {"run", cmd_run, "generate text from a prompt (optionally as chat) at any budget"},
    {"info", cmd_info, "config, layer pattern and every budget's parameters and bytes"},
    {"tokenize", cmd_tokenize, "encode text to token ids (or --decode ids to text)"},
    {"logits", cmd_logits, "write float32 logits of a token sequence to a file"},
    {"perplexity", cmd_perplexity, "perplexity of a text file at a budget"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server (chat, completions, SSE, elastic fields)"},
    {"eval", cmd_eval, "accuracy and latency per budget, thinking cap and think->answer switch"},
    {"train", cmd_train, "pretrain a Nemotron-H model (--config FILE), or --bench for training tok/s vs GEMM peak"},
    {"elastify", cmd_elastify, "elastic training: routers + distillation turn a ranked parent into nested budgets"},
    {"tokenizer-train", cmd_tokenizer_train, "train a byte-level BPE tokenizer.json (Nemotron pre-tokenizer, chat specials)"},
    {"tasks", cmd_tasks, "synthetic reasoning tasks (add, sort, compare) as chat JSONL, eval items or text"},
    {"bench", cmd_bench, "memory bandwidth and prefill/decode speed at two budgets"},
    {"slice", cmd_slice, "cut a budget out as a standalone Hugging Face checkpoint"},
    {"rank", cmd_rank, "importance scores over calibration data; permute the parent into rank order"},
    {"quantize", cmd_quantize, "FP8 / NVFP4 (ModelOpt) copy that keeps the elastic nesting"},
    {"synth", cmd_synth, "write a deterministic random Nemotron-H checkpoint"},
};

static void usage(FILE *f) {
    fprintf(f, "starling %s — one checkpoint, many models (elastic Nemotron-H)\n\n"
               "usage: starling COMMAND [options]   (starling COMMAND --help for details)\n\ncommands:\n",
            ST_VERSION);
    for (size_t i = 0; i < sizeof g_cmds / sizeof g_cmds[0]; i++) fprintf(f, "  %-11s %s\n", g_cmds[i].name, g_cmds[i].help);
    fprintf(f, "\nbudgets (--budget): a name from the checkpoint's elastic block (e.g. S), 'full',\n"
               "explicit widths 'hidden_size=128,moe_intermediate_size=96,skip_layers=2:5', a name\n"
               "refined by widths 'S:mamba_head_dim=8', or '@budget.json'.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) { usage(stdout); return 0; }
    if (!strcmp(argv[1], "--version")) { printf("starling %s\n", ST_VERSION); return 0; }
    for (size_t i = 0; i < sizeof g_cmds / sizeof g_cmds[0]; i++)
        if (!strcmp(argv[1], g_cmds[i].name)) return g_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "starling: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
