// A stack/proto source that reaches for the emulated hypervisor. It must not
// compile: zc_proto sees only zc_common (docs/ARCHITECTURE.md).
#include "proto/ether.hpp"
#include "hv/emu/grant.hpp"
int layering_probe_proto_sees_hv_emu() { return 0; }
