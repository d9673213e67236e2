// SPDX-License-Identifier: MIT
// Choosing the hypervisor port, and the GNTST_* names.
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

const char* gntst_name(int16_t status) noexcept {
    switch (status) {
    case GNTST_okay: return "GNTST_okay";
    case GNTST_general_error: return "GNTST_general_error";
    case GNTST_bad_domain: return "GNTST_bad_domain";
    case GNTST_bad_gntref: return "GNTST_bad_gntref";
    case GNTST_bad_handle: return "GNTST_bad_handle";
    case GNTST_bad_virt_addr: return "GNTST_bad_virt_addr";
    case GNTST_bad_dev_addr: return "GNTST_bad_dev_addr";
    case GNTST_no_device_space: return "GNTST_no_device_space";
    case GNTST_permission_denied: return "GNTST_permission_denied";
    case GNTST_bad_page: return "GNTST_bad_page";
    case GNTST_bad_copy_arg: return "GNTST_bad_copy_arg";
    case GNTST_address_too_big: return "GNTST_address_too_big";
    case GNTST_eagain: return "GNTST_eagain";
    case GNTST_no_space: return "GNTST_no_space";
    }
    return "GNTST_unknown";
}

} // namespace zc::hv
