/* bd_draw: minimal drawing on a bd_image for annotated previews (`detect --annotate`):
 * box outlines and text labels in a built-in 5x7 bitmap font (ASCII 32..126; other
 * bytes draw as '?'). Everything is clipped to the image, so any coordinates are
 * safe. Reentrant; an image is drawn on by one thread at a time. */
#ifndef BD_DRAW_H
#define BD_DRAW_H

#include <stdint.h>

#include "bd_image.h"

typedef struct bd_rgb {
  uint8_t r, g, b;
} bd_rgb;

#define BD_FONT_W 5 /* glyph cell, without spacing */
#define BD_FONT_H 7

/* Glyph rows for c (7 strings of 5 chars, '#' = ink); NULL outside 32..126. */
const char *const *bd_font_glyph(int c);

/* A distinct, saturated colour for class index i (cycles over a fixed palette). */
bd_rgb bd_draw_palette(int i);

/* Filled rectangle [x0, x1) x [y0, y1). */
void bd_draw_fill(bd_image *im, int x0, int y0, int x1, int y1, bd_rgb c);

/* Outline of the box [x0, x1) x [y0, y1), `thick` pixels wide, drawn inside it. */
void bd_draw_rect(bd_image *im, int x0, int y0, int x1, int y1, int thick, bd_rgb c);

/* Width and height in pixels of text drawn at integer scale s (>= 1). */
int bd_draw_text_width(const char *text, int s);
int bd_draw_text_height(int s);

/* Text with its top-left corner at (x, y); background untouched. */
void bd_draw_text(bd_image *im, int x, int y, const char *text, int s, bd_rgb fg);

/* A label for a box whose top-left corner is (x, y): text on a filled box just above
 * the corner, or just inside it when there is no room above. */
void bd_draw_label(bd_image *im, int x, int y, const char *text, int s, bd_rgb fg, bd_rgb bg);

#endif
