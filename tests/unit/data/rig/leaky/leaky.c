#include <stdlib.h>
#include <string.h>
void *qapi_clone(const void *src, size_t n) { void *p = malloc(n); memcpy(p, src, n); return p; }
void net_client_init1(void) { char cfg[24] = "netdev config"; void *c = qapi_clone(cfg, sizeof cfg); c = NULL; (void)c; }
