// SPDX-License-Identifier: MIT
// The emulated implementation of hv::port.
#pragma once

#include <memory>
#include <string>

#include "hv/emu/client.hpp"
#include "hv/hv.hpp"

namespace zc::hv::emu {

// Connect to the broker named by $ZCNET_EMU_SOCK as domain $ZCNET_DOMID.
result<std::unique_ptr<port>> open_port(std::string* why) noexcept;
// Explicit options (tests running several domains in one process).
result<std::unique_ptr<port>> open_port(const connect_options& o, std::string* why) noexcept;

// The emu port's client, for emu-only tools and tests (nullptr if `p` is not emu).
client* client_of(port& p) noexcept;

} // namespace zc::hv::emu
