// SPDX-License-Identifier: MIT
// Emulated event channels with the Linux evtchn driver's semantics.
#pragma once

#include <memory>

#include "hv/emu/client.hpp"
#include "hv/hv.hpp"

namespace zc::hv::emu {
result<std::unique_ptr<evtchn>> make_evtchn(client& c) noexcept;
}
