// SPDX-License-Identifier: MIT
// An emulated Xen host in this process: a broker (the emulated hypervisor
// and xenstored) in its own thread, listening in a fresh temporary
// directory that is removed again. Tests, benchmarks and zc-vmbench start
// their hosts with it; domains are ports of this process or of children
// that connect to sock().
#pragma once

#include <memory>
#include <string>

#include "common/result.hpp"
#include "hv/emu/broker.hpp"
#include "hv/hv.hpp"

namespace zc::hv::emu {

class host {
public:
    // `tag` names the directory (/tmp/zcnet-<tag>-XXXXXX). Errors: -errno
    // of mkdtemp, or the broker's (with `why`).
    static result<std::unique_ptr<host>> create(const std::string& tag, std::string* why) noexcept;
    ~host(); // stops the broker, removes the directory

    host(const host&) = delete;
    host& operator=(const host&) = delete;

    const std::string& dir() const noexcept { return _dir; }
    const std::string& sock() const noexcept;
    hv::emu::broker& broker() noexcept { return *_broker; }

    // Domain `d` in this process (created, or joined with `attach`), with
    // the admin token (this process is the toolstack). mem_pages 0 = the
    // broker's default. `privileged`: a driver domain that may map and copy
    // other domains' grants (dom0 always may; broker.hpp).
    result<std::unique_ptr<hv::port>> domain(hv::domid_t d, uint32_t mem_pages, std::string* why,
                                             bool attach = false, bool privileged = false) noexcept;
    // The broker's admin token, hex: for processes this host starts as its
    // toolstack (they pass it as $ZCNET_EMU_TOKEN).
    const std::string& admin_token() const noexcept { return _broker->admin_token(); }

    // Stop the broker now (the destructor does it otherwise).
    void stop() noexcept;

private:
    host() = default;
    std::string _dir;
    std::unique_ptr<hv::emu::broker> _broker;
};

} // namespace zc::hv::emu
