/*
 * cli.h — the `starling` command: one file per subcommand, each exposing
 * int cmd_NAME(int argc, char **argv) (argv[0] is the subcommand name) that
 * returns the process exit status: 0 ok, 1 runtime error, 2 usage error.
 */
#ifndef ST_CLI_H
#define ST_CLI_H
#include "starling.h"
#include <stdio.h>

int cmd_run(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_slice(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_tokenizer_train(int argc, char **argv);
int cmd_tasks(int argc, char **argv);
int cmd_rank(int argc, char **argv);
int cmd_elastify(int argc, char **argv);

/* "starling CMD: message" on stderr, newline added; returns 1. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The library's last error as one line: "starling CMD: <st_last_error>"; returns 1. */
int cli_fail_st(const char *cmd, st_status rc);
/* Usage error: message + "try 'starling CMD --help'"; returns 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse a non-negative int / float option value strictly; 0 ok, -1 bad. */
int cli_int(const char *s, long lo, long hi, long *out);
int cli_float(const char *s, double lo, double hi, double *out);

/* Load model DIR and resolve budget spec (NULL: default budget). Prints the
 * error itself and returns non-zero on failure. */
int cli_load(const char *cmd, const char *dir, const char *budget_spec, st_model **m, st_budget **b);
/* "--budget-file F" as the budget spec "@F" (a static buffer; one per process). */
const char *cli_budget_file(const char *path);
/* Calibration token ids for quantization: FILE's text (or a built-in English
 * sample) through DIR/tokenizer.json, at most max. Prints errors; 0 ok. */
int cli_calib_tokens(const char *cmd, const st_model *m, const char *dir, const char *file, int max, int32_t **ids,
                     int *n);
/* Read a whole file (or "-" for stdin) into a malloc'd NUL-terminated string. */
char *cli_read_text(const char *cmd, const char *path, size_t *len);
#endif
