/*
 * plot.h — small SVG charts (line and scatter, linear or log axes) for the
 * figures the tools write next to their tables: one writer for every plot.
 *
 *   st_plot *p = st_plot_new(&(st_plot_axes){.title = "...", .xlabel = "...", .ylabel = "..."});
 *   st_plot_line(p, xs, ys, n, "#1f77b4", "series", 0);
 *   st_plot_dots(p, xs, ys, n, "#2ca02c", "measured");
 *   st_plot_point(p, x, y, "#d62728", "label");
 *   st_plot_write(p, "out.svg");   // atomic
 *   st_plot_free(p);
 *
 * Axis ranges default to the data (with a margin, from 0 on linear axes);
 * points outside an explicit range are clipped by the SVG viewport. Every
 * value given must be finite (and > 0 on a log axis): callers leave out the
 * samples they do not have.
 */
#ifndef ST_UTIL_PLOT_H
#define ST_UTIL_PLOT_H

#include "starling.h"

typedef struct {
    const char *title, *xlabel, *ylabel;
    double xmin, xmax, ymin, ymax; /* both 0: from the data */
    int logx, logy;                /* log10 axes (data must be > 0) */
} st_plot_axes;

typedef struct st_plot st_plot;

st_plot *st_plot_new(const st_plot_axes *a);
void st_plot_free(st_plot *p);
/* A polyline through n points, in the legend as label (NULL: not listed). */
void st_plot_line(st_plot *p, const double *x, const double *y, int n, const char *color, const char *label,
                  int dashed);
/* n unconnected dots (a measurement taken now and then, e.g. a validation
 * loss), in the legend as label (NULL: not listed). */
void st_plot_dots(st_plot *p, const double *x, const double *y, int n, const char *color, const char *label);
/* One marked point with its label written beside it. */
void st_plot_point(st_plot *p, double x, double y, const char *color, const char *label);
st_status st_plot_write(const st_plot *p, const char *path);

#endif
