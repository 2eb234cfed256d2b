/* bd_image: a decoded picture, the currency between storage/ (decoders) and gpu/
 * (families, preprocessing). Always 8-bit RGB, interleaved, rows packed
 * (stride = 3*w). Ownership: the struct owns `data` (malloc'd); bd_image_free
 * releases it and accepts NULL. */
#ifndef BD_IMAGE_H
#define BD_IMAGE_H

#include <stdint.h>
#include <stdlib.h>

typedef struct bd_image {
  int w, h;      /* pixels, both >= 1 */
  uint8_t *data; /* w*h*3 bytes, RGB */
} bd_image;

static inline void bd_image_free(bd_image *im) {
  if (!im) return;
  free(im->data);
  im->data = NULL;
  im->w = im->h = 0;
}

#endif
