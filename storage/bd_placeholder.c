#include "bd_status.h"
int bd_storage_placeholder_(void);
int bd_storage_placeholder_(void) { return 0; }
