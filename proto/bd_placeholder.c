#include "bd_status.h"
int bd_proto_placeholder_(void);
int bd_proto_placeholder_(void) { return 0; }
