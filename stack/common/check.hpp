// SPDX-License-Identifier: MIT
// Two assertion levels (see STYLE.md):
//  ZC_CHECK   always on; for internal invariants only.
//  ZC_DCHECK  debug builds only; for hot loops.
// Never use either on anything a peer wrote (ring entries, packets, API
// arguments): validate those and answer with an error.
#pragma once

namespace zc::detail {
[[noreturn]] void check_failed(const char* expr, const char* file, int line) noexcept;
}

#define ZC_CHECK(expr)                                                         \
    do {                                                                       \
        if (__builtin_expect(!(expr), 0))                                      \
            ::zc::detail::check_failed(#expr, __FILE__, __LINE__);             \
    } while (0)

#ifdef NDEBUG
#define ZC_DCHECK(expr) do { (void)sizeof(expr); } while (0)
#else
#define ZC_DCHECK(expr) ZC_CHECK(expr)
#endif
