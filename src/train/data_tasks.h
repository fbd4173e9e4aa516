/*
 * data_tasks.h — synthetic reasoning problems with written-out procedures
 * (starling tasks): multi-digit addition with the carry column by column,
 * sorting by repeated selection, comparing numbers digit by digit; and a
 * code family whose thinking is an addition and whose answer is a memorised
 * fact about the sum (the answer step needs knowledge the thinking does not).
 *
 * Every problem has a canonical form (e.g. "add 4827 395") whose 64-bit hash
 * is its key; the key alone decides whether the problem belongs to the
 * training or the held-out evaluation split (key % ST_TASK_EVAL_MOD == 0 is
 * evaluation), so an evaluation problem can never be generated for training,
 * whatever the seeds, counts or prompt wording. See docs/DATA.md.
 */
#ifndef ST_DATA_TASKS_H
#define ST_DATA_TASKS_H

#include "starling.h"
#include <stddef.h>
#include <stdint.h>

#define ST_TASK_EVAL_MOD 8 /* 1 problem in 8 is held out for evaluation */

/* CODE comes after MIX so that mix (add, sort, compare) draws the same
 * problems it always did: it is not part of mix. */
typedef enum { ST_TASK_ADD = 0, ST_TASK_SORT = 1, ST_TASK_COMPARE = 2, ST_TASK_MIX = 3, ST_TASK_CODE = 4 } st_task_kind;

typedef struct {
    st_task_kind kind;        /* MIX: add, sort and compare in turn at random (not CODE) */
    int eval_split;           /* 0: training problems; 1: held-out evaluation problems */
    uint64_t seed;
    int min_digits, max_digits; /* operand sizes for add / compare; 0 = defaults (add 4..6, compare 3..8) */
} st_task_opts;

typedef struct {
    st_task_kind kind;        /* never MIX */
    uint64_t key;             /* hash of the canonical problem */
    char id[48];              /* "<kind>-<key as 16 hex digits>" */
    char *prompt;             /* the user message */
    char *reasoning;          /* the written procedure, without think tags; ends with the answer
                                 (code: with the sum, whose word only the answer gives) */
    char *answer;             /* the final answer, as st_task_answer_correct checks it */
} st_task;

/* Problem number `index` of the stream (seed, kind, split): the same
 * arguments always give the same problem. */
st_status st_task_gen(const st_task_opts *o, uint64_t index, st_task *out);
void st_task_free(st_task *t);
/* The codebook behind the code family: a fixed, arbitrary word for every
 * number 0..ST_CODEBOOK_N-1 (knowledge that a model can only memorise; no
 * rule computes it). st_codebook_word(n) for n outside the range is NULL.
 * st_codebook_fact(n) is the fact as the training text states it and as the
 * code family's answer is written: "The code word for 417 is rain." */
#define ST_CODEBOOK_N 500
const char *st_codebook_word(int n);
st_status st_codebook_fact(int n, char *buf, size_t cap);
/* 1 when a problem key belongs to the evaluation split. */
int st_task_key_is_eval(uint64_t key);
/* The assistant turn: "<think>\n{reasoning}\n</think>\n{answer}", or with
 * think = 0 "<think>\n</think>\n{answer}" (what a zero thinking budget forces
 * in `starling eval --caps 0`). malloc'd. */
st_status st_task_assistant(const st_task *t, int think, char **out);
/* The grader of `starling eval`: 1 when the reply reply[0..n) gives the
 * expected answer want. A numeric want is compared with the last integer in
 * the reply (its sign kept, leading zeros ignored), so the reply may reason
 * before it; any other want with the whole reply, trimmed of whitespace,
 * case-insensitively. */
int st_task_answer_correct(const char *reply, size_t n, const char *want);
const char *st_task_kind_name(st_task_kind k);
/* -1 for an unknown name. */
int st_task_kind_parse(const char *name);

#endif
