#include <stdlib.h>
void net_client_init1(void);
static void *keep;
static void other_leak(void) { void *p = malloc(100); p = NULL; (void)p; }
int main(void) { keep = malloc(40); net_client_init1(); other_leak(); return 0; }
