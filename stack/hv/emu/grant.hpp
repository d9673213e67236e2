// SPDX-License-Identifier: MIT
// Emulated grant tables: granting (gntshr) and mapping/copying (gnttab) with
// Xen's validation and GNTST_* codes. Owned by the grant-emulation work.
#pragma once

#include <memory>

#include "hv/emu/client.hpp"
#include "hv/hv.hpp"

namespace zc::hv::emu {

// Allocator of this domain's own guest-memory frames (the pages a guest can
// grant). One per domain process, shared by all its gntshr handles;
// thread-safe.
class frame_allocator;
std::unique_ptr<frame_allocator> make_frame_allocator(client& c);

std::unique_ptr<gntshr> make_gntshr(client& c, frame_allocator& fa);
std::unique_ptr<gnttab> make_gnttab(client& c);

} // namespace zc::hv::emu
