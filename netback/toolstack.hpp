// SPDX-License-Identifier: MIT
// The toolstack's part of a vif, as libxl does for `xl network-attach` and
// domain creation: the frontend and backend xenstore directories with their
// initial keys and permissions. On a real Xen host libxl does this; on the
// emulated host zc-netback's `vif-add` does.
#pragma once

#include <cstdint>
#include <string>

#include "hv/xs.hpp"
#include "netback/datapath.hpp"

namespace zc::netback {

struct vif_spec {
    hv::domid_t backend = 0;
    hv::domid_t frontend = hv::domid_invalid;
    uint32_t devid = 0;
    mac_addr mac{};  // all zero: derived from the frontend domid and devid (00:16:3e:..., Xen's OUI)
    std::string ip;  // xl's ip=: the `ip` key (IPv4 addresses, space separated), "" for none
    std::string rate; // the `rate` key as libxl writes it ("BYTES,USECS"), "" for none
};

std::string frontend_dir(hv::domid_t frontend, uint32_t devid);
std::string backend_dir(hv::domid_t backend, hv::domid_t frontend, uint32_t devid);
// Xen's OUI 00:16:3e with the domid and devid in the low bytes.
mac_addr default_mac(hv::domid_t frontend, uint32_t devid);

// Create both directories in one transaction (retried on EAGAIN).
// `xs` must be privileged (dom0). Errors: -EEXIST (the vif exists),
// -EINVAL, or the xenstore error.
int vif_create(hv::xs& xs, const vif_spec& s, std::string* why);
// Remove both directories (as libxl does after the device is closed).
int vif_destroy(hv::xs& xs, hv::domid_t backend, hv::domid_t frontend, uint32_t devid);

} // namespace zc::netback
