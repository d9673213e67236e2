// SPDX-License-Identifier: MIT
#include "netback/toolstack.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace zc::netback {

std::string frontend_dir(hv::domid_t fe, uint32_t devid) {
    return "/local/domain/" + std::to_string(fe) + "/device/vif/" + std::to_string(devid);
}

std::string backend_dir(hv::domid_t be, hv::domid_t fe, uint32_t devid) {
    return "/local/domain/" + std::to_string(be) + "/backend/vif/" + std::to_string(fe) + "/" + std::to_string(devid);
}

mac_addr default_mac(hv::domid_t fe, uint32_t devid) {
    return {0x00, 0x16, 0x3e, uint8_t(fe >> 8), uint8_t(fe), uint8_t(devid)};
}

int vif_create(hv::xs& xs, const vif_spec& s, std::string* why) {
    if (s.frontend == hv::domid_invalid || s.frontend == s.backend) {
        if (why) *why = "vif-add: the frontend must be another domain than the backend";
        return -EINVAL;
    }
    mac_addr mac = s.mac;
    if (mac == mac_addr{}) mac = default_mac(s.frontend, s.devid);
    std::string fe = frontend_dir(s.frontend, s.devid);
    std::string be = backend_dir(s.backend, s.frontend, s.devid);
    std::string fe_id = std::to_string(s.frontend), be_id = std::to_string(s.backend);
    for (int attempt = 0; attempt < 16; attempt++) {
        auto t = xs.transaction_start();
        if (!t) return t.error();
        auto abort = [&](int rc, const std::string& msg) {
            xs.transaction_end(*t, true);
            if (why) *why = msg;
            return rc;
        };
        if (xs.read(fe + "/state", *t) || xs.read(be + "/state", *t))
            return abort(-EEXIST, "vif-add: vif " + fe_id + "/" + std::to_string(s.devid) + " exists already");
        int rc = 0;
        // Frontend: owned by the guest, readable by the backend (libxl_device.c).
        rc = rc ? rc : xs.mkdir(fe, *t);
        rc = rc ? rc : xs.set_perms(fe, {"n" + fe_id, "r" + be_id}, *t);
        rc = rc ? rc : xs.write(fe + "/backend", be, *t);
        rc = rc ? rc : xs.write(fe + "/backend-id", be_id, *t);
        rc = rc ? rc : xs.write(fe + "/handle", std::to_string(s.devid), *t);
        rc = rc ? rc : xs.write(fe + "/mac", to_string(mac), *t);
        rc = rc ? rc : xs.write(fe + "/state", "1", *t); // XenbusStateInitialising
        // As libxl 4.17 writes them (seen in the Xen lab): "trusted" (Linux
        // netfront bounces its data for a backend the toolstack marks
        // untrusted, XSA-403) and "mtu", which the guest may read but not change.
        rc = rc ? rc : xs.write(fe + "/trusted", "1", *t);
        rc = rc ? rc : xs.write(fe + "/mtu", "1500", *t);
        rc = rc ? rc : xs.set_perms(fe + "/mtu", {"n" + be_id, "r" + fe_id}, *t);
        // Backend: owned by the backend domain, readable by the guest.
        rc = rc ? rc : xs.mkdir(be, *t);
        rc = rc ? rc : xs.set_perms(be, {"n" + be_id, "r" + fe_id}, *t);
        rc = rc ? rc : xs.write(be + "/frontend", fe, *t);
        rc = rc ? rc : xs.write(be + "/frontend-id", fe_id, *t);
        rc = rc ? rc : xs.write(be + "/online", "1", *t);
        rc = rc ? rc : xs.write(be + "/handle", std::to_string(s.devid), *t);
        rc = rc ? rc : xs.write(be + "/mac", to_string(mac), *t);
        rc = rc ? rc : xs.write(be + "/type", "vif", *t);
        rc = rc ? rc : xs.write(be + "/script", "zc-netback", *t);
        if (!s.ip.empty()) rc = rc ? rc : xs.write(be + "/ip", s.ip, *t);
        if (!s.rate.empty()) rc = rc ? rc : xs.write(be + "/rate", s.rate, *t);
        rc = rc ? rc : xs.write(be + "/state", "1", *t);
        if (rc) return abort(rc, "vif-add: xenstore: " + std::string(std::strerror(-rc)));
        rc = xs.transaction_end(*t, false);
        if (rc == -EAGAIN) continue;
        if (rc && why) *why = "vif-add: commit: " + std::string(std::strerror(-rc));
        return rc;
    }
    if (why) *why = "vif-add: xenstore kept conflicting";
    return -EAGAIN;
}

int vif_destroy(hv::xs& xs, hv::domid_t be, hv::domid_t fe, uint32_t devid) {
    int a = xs.rm(frontend_dir(fe, devid));
    int b = xs.rm(backend_dir(be, fe, devid));
    return a ? a : b;
}

} // namespace zc::netback
