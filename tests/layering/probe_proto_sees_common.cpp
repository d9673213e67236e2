// The control of probe_proto_sees_hv_emu.cpp: an include zc_proto may use.
#include "proto/ether.hpp"
#include "common/clock.hpp"
int layering_probe_proto_sees_common() { return int(zc::mono_ms() & 0); }
