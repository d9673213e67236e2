// SPDX-License-Identifier: MIT
// The GNTST_* names. hv::open() is in select.cpp.
#include "hv/hv.hpp"

namespace zc::hv {

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
