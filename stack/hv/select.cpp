// SPDX-License-Identifier: MIT
// hv::open(): the one place that knows both ports, so that nothing else
// links the emulated hypervisor and real Xen side by side (its own part,
// zc_hv_select; docs/ARCHITECTURE.md).
#include "hv/hv.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include "common/log.hpp"
#include "hv/emu/emu_port.hpp"
#include "hv/xen/xen_port.hpp"

namespace zc::hv {

namespace {
constexpr const char* tag = "hv";
constexpr const char* xen_probe = "/dev/xen/gntdev";
} // namespace

result<std::unique_ptr<port>> open(kind k, std::string* why) noexcept {
    switch (k) {
    case kind::xen: return xen::open_port(why);
    case kind::emu: return emu::open_port(why);
    }
    if (why) *why = "unknown hypervisor kind";
    return err(-EINVAL);
}

result<std::unique_ptr<port>> open(std::string* why) noexcept {
    const char* env = std::getenv("ZCNET_HV");
    if (env && *env) {
        if (!std::strcmp(env, "xen")) return open(kind::xen, why);
        if (!std::strcmp(env, "emu")) return open(kind::emu, why);
        if (why) *why = std::string("ZCNET_HV=") + env + ": expected \"xen\" or \"emu\"";
        return err(-EINVAL);
    }
    // gntdev is what every xen handle needs first; without it there is no
    // point trying (and open_port would say the same thing).
    const bool xen = ::access(xen_probe, F_OK) == 0;
    ZC_LOG(debug, tag, "%s %s: using %s", xen_probe, xen ? "found" : "absent", xen ? "xen" : "emu");
    return open(xen ? kind::xen : kind::emu, why);
}

} // namespace zc::hv
