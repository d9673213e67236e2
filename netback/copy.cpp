// SPDX-License-Identifier: MIT
// The grant-copy batch and the bounce conversions: this is the one file
// where a VM-to-VM payload is copied (gref->gref grant copy, or bounce
// fallback). Copies per path (see docs/ARCHITECTURE.md, "Copies per path"):
//   direct or queued frame: 1 copy, gref->gref, TX page to RX page;
//   bounce fallback: 2 copies, gref->local into bounce buffers, then local->gref;
// plus, on every path, the header copy in tx.cpp (at most 128 bytes
// gref->local, to read the MACs). Follows Linux rx.c's xenvif_rx_copy_add
// and xenvif_rx_copy_flush (one batched grant copy per pass).
#include <algorithm>

#include "netback/common.hpp"

namespace zc::netback {

// One grant-copy call for every delivery and conversion of a pass, then the
// responses.
void datapath::impl::copy_and_publish(worker& w, std::vector<delivery>& dels,
                                      std::vector<conversion>& convs) noexcept {
    w.copy_segs.clear();
    w.seg_own.clear();
    w.cores.clear();
    for (uint32_t di = 0; di < dels.size(); ++di) add_delivery_segments(w, dels[di], di);
    for (uint32_t ci = 0; ci < convs.size(); ++ci) add_conversion_segments(w, convs[ci], ci);
    for (const worker::core_tally& t : w.cores) {
        bump(t.core->ctr.grant_copy_segments, t.segs);
        if (t.vm_to_vm) bump(t.core->ctr.vm_to_vm_segments, t.vm_to_vm);
        if (t.hdr_payload) bump(t.core->ctr.hdr_payload_segments, t.hdr_payload);
    }
    if (!w.copy_segs.empty()) run_copy_batch(w, dels, convs);
    finish_conversions(w, convs);
    publish(w, dels);
}

namespace {
// The tally of sending vif `c` in this pass (usually the only one).
worker::core_tally& tally_of(worker& w, vif_core* c) noexcept {
    if (!w.cores.empty() && w.cores.back().core == c) return w.cores.back();
    for (worker::core_tally& t : w.cores)
        if (t.core == c) return t;
    return w.cores.emplace_back(worker::core_tally{c, 0, 0, 0});
}
} // namespace

// The payload segments of one delivery: its frame's slots (foreign pages or
// bounce buffers) into the destination's RX slots.
void datapath::impl::add_delivery_segments(worker& w, delivery& d, uint32_t di) noexcept {
    const hv::domid_t ddom = d.dq->core->dom;
    worker::core_tally& tally = tally_of(w, d.src_core);
    if (d.direct) { // the headers only (direct.cpp)
        add_direct_segments(w, d, di);
        ++tally.segs;
        return;
    }
    // RX ring slot of data slot j: the extra sits after the first.
    auto ring_slot = [&d](uint32_t j) { return uint8_t(j == 0 ? 0 : j + (d.extra ? 1 : 0)); };
    for (uint32_t j = 0; j < d.nring; ++j) {
        d.slot_len[j] = 0;
        d.slot_status[j] = GNTST_okay;
    }
    uint32_t vm_to_vm = 0, nsegs = 0; // counted once per delivery
    // A frame the header copy read whole (one slot of at most
    // XEN_NETBACK_TX_COPY_LEN bytes) goes from that private copy: its TX page
    // is not read a second time (as Linux xenvif_tx_build_gops keeps such a
    // frame in the skb's linear area), and the grant copy needs no source
    // grant. What the switch decided on is then exactly what is delivered.
    tx_packet* small = !d.bounced && d.pkt->nslots == 1 && d.pkt->hdr_len == d.pkt->len ? d.pkt : nullptr;
    if (small && d.nring == 1 && small->len != 0) {
        // The common small frame: one segment into the first RX slot.
        d.slot_len[0] = uint16_t(small->len);
        d.slot_status[0] = GNTST_okay;
        hv::copy_segment& c = w.copy_segs.emplace_back();
        c.source.virt = small->hdr;
        c.dest.foreign.ref = d.req[0].gref;
        c.dest.foreign.offset = 0;
        c.dest.foreign.domid = ddom;
        c.len = uint16_t(small->len);
        c.flags = GNTCOPY_dest_gref;
        c.status = GNTST_okay;
        w.seg_own.push_back({int32_t(di), -1, 0});
        ++tally.hdr_payload;
        ++tally.segs;
        return;
    }
    auto add = [&](const pool::frame& s, uint32_t s_off, uint32_t j, uint32_t d_off, uint32_t len) {
        hv::copy_segment c{};
        if (small) {
            c.source.virt = small->hdr + s_off;
            c.flags = GNTCOPY_dest_gref;
        } else if (s.kind == pool::seg_kind::foreign) {
            c.source.foreign.ref = s.gref;
            c.source.foreign.offset = uint16_t(s.offset + s_off);
            c.source.foreign.domid = s.domid;
            c.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
            ++vm_to_vm;
        } else {
            c.source.virt = s.owner->data(s) + s_off; // a bounce buffer, or an uplink's UMEM frame
            c.flags = GNTCOPY_dest_gref;
        }
        const uint8_t rs = ring_slot(j);
        c.dest.foreign.ref = d.req[rs].gref;
        c.dest.foreign.offset = uint16_t(d_off);
        c.dest.foreign.domid = ddom;
        c.len = uint16_t(len);
        w.copy_segs.push_back(c);
        w.seg_own.push_back({int32_t(di), -1, rs});
        ++nsegs;
    };
    const pool::frame* segs = d.segs();
    uint32_t j = 0, off = 0;
    for (uint32_t i = 0; i < d.nslots; ++i) {
        const pool::frame& s = segs[i];
        if (s.len == 0) continue;
        // Fill every RX page before the next (Linux xenvif_rx_next_chunk;
        // a source slot never crosses its own page, tx_check).
        uint32_t s_off = 0;
        while (s_off < s.len) {
            const uint32_t k = std::min<uint32_t>(uint32_t(hv::page_size) - off, s.len - s_off);
            add(s, s_off, j, off, k);
            off += k;
            s_off += k;
            d.slot_len[ring_slot(j)] = uint16_t(off);
            if (off == hv::page_size) {
                ++j;
                off = 0;
            }
        }
    }
    tally.vm_to_vm += vm_to_vm;
    if (small) tally.hdr_payload += nsegs;
    tally.segs += nsegs;
}

// The first half of a bounce fallback: the source's slots into the bounce
// buffers start_conversion took, packed (every buffer filled before the
// next, as RX pages are), so that a chain of small slots takes the buffers
// its length needs, not one per slot.
void datapath::impl::add_conversion_segments(worker& w, conversion& cv, uint32_t ci) noexcept {
    worker::core_tally& tally = tally_of(w, cv.src_core.get());
    pool::pool& bp = *mgr->bounce();
    const uint32_t bsz = bp.buf_size();
    uint32_t b = 0, off = 0;
    for (uint32_t i = 0; i < cv.nslots; ++i) {
        const pool::frame& s = cv.pkt->seg[i];
        for (uint32_t s_off = 0; s_off < s.len && b < cv.nbuf;) {
            const uint32_t k = std::min<uint32_t>(bsz - off, s.len - s_off);
            hv::copy_segment c{};
            c.source.foreign.ref = s.gref;
            c.source.foreign.offset = uint16_t(s.offset + s_off);
            c.source.foreign.domid = s.domid;
            c.dest.virt = bp.data(cv.bounce[b]) + off;
            c.len = uint16_t(k);
            c.flags = GNTCOPY_source_gref;
            w.copy_segs.push_back(c);
            w.seg_own.push_back({-1, int32_t(ci), 0});
            ++tally.segs;
            s_off += k;
            off += k;
            if (off == bsz) {
                ++b;
                off = 0;
            }
        }
    }
}

// The hypercall, outside every queue lock; each failed segment marks its
// delivery's RX slot or its conversion.
void datapath::impl::run_copy_batch(worker& w, std::vector<delivery>& dels,
                                    std::vector<conversion>& convs) noexcept {
    std::vector<hv::copy_segment>& segs = w.copy_segs;
    const int rc = tab->copy(segs.data(), uint32_t(segs.size()));
    for (const worker::core_tally& t : w.cores) bump(t.core->ctr.grant_copy_batches);
    bool probe = false;
    for (size_t i = 0; i < segs.size(); ++i) {
        const int16_t st = rc < 0 ? int16_t(GNTST_general_error) : segs[i].status;
        if (st == GNTST_okay) continue;
        const worker::seg_owner& o = w.seg_own[i];
        if (o.del >= 0) {
            dels[size_t(o.del)].slot_status[o.slot] = st;
            probe = probe || rc >= 0;
        } else {
            convs[size_t(o.conv)].failed = true;
        }
    }
    if (probe) attribute_rx_faults(dels);
}

// A failed gref->gref segment does not say whose grant was bad. Xen checks
// both; Linux's RX copy only has the receiver's (its source is local), so
// its failures are the receiver's. Here a failed delivery whose source
// still reads (or is local) failed on the receiver's RX grant: that is
// charged to the receiver, not to the sender (counters.hpp, drop_rx_grant).
void datapath::impl::attribute_rx_faults(std::vector<delivery>& dels) noexcept {
    alignas(64) static thread_local uint8_t scratch[hv::page_size];
    for (delivery& d : dels) {
        bool failed = false;
        for (uint32_t j = 0; j < d.nring; ++j) failed = failed || d.slot_status[j] != GNTST_okay;
        if (!failed) continue;
        if (d.direct) { // its one copy is from local memory
            d.rx_grant_fault = true;
            continue;
        }
        bool source_ok = true;
        const pool::frame* segs = d.segs(); // d.seg is written only for bounced deliveries
        for (uint32_t i = 0; i < d.nslots && source_ok; ++i) {
            const pool::frame& s = segs[i];
            if (s.len == 0 || s.kind != pool::seg_kind::foreign) continue;
            hv::copy_segment c{};
            c.source.foreign.ref = s.gref;
            c.source.foreign.offset = s.offset;
            c.source.foreign.domid = s.domid;
            c.dest.virt = scratch;
            c.len = s.len;
            c.flags = GNTCOPY_source_gref;
            source_ok = tab->copy(&c, 1) == 0 && c.status == GNTST_okay;
        }
        d.rx_grant_fault = source_ok;
    }
}

// ---------------------------------------------------------------------------
// Bounce conversions: a frame that waits too long for the destination's RX
// buffers gives the source its TX slots back by moving to bounce buffers.

// Bounce buffers for `len` bytes (packed: ceil(len / buf_size) buffers),
// charged on the sender's and the receiver's quotas
// (datapath_options::bounce_src_quota / bounce_dst_quota). Any thread; the
// quotas are atomic reservations, undone on failure.
bounce_rc datapath::impl::alloc_bounce(vif_core& src, vif_core& dst, uint32_t len, pool::frame* out, uint32_t& nbuf,
                                       uint32_t& charged) noexcept {
    nbuf = charged = 0;
    pool::pool* bp = mgr->bounce();
    if (!bp) return bounce_rc::no_buffers;
    const uint32_t bsz = bp->buf_size();
    const uint32_t n = (len + bsz - 1) / bsz;
    if (n > max_tx_slots) return bounce_rc::no_buffers;
    const uint64_t bytes = uint64_t(n) * bsz;
    if (src.bounce_src.fetch_add(bytes, std::memory_order_relaxed) + bytes > bounce_src_quota) {
        src.bounce_src.fetch_sub(bytes, std::memory_order_relaxed);
        return bounce_rc::src_quota;
    }
    if (dst.bounce_dst.fetch_add(bytes, std::memory_order_relaxed) + bytes > bounce_dst_quota) {
        dst.bounce_dst.fetch_sub(bytes, std::memory_order_relaxed);
        src.bounce_src.fetch_sub(bytes, std::memory_order_relaxed);
        return bounce_rc::dst_quota;
    }
    for (uint32_t i = 0; i < n; ++i) {
        out[i] = pool::frame{};
        if (bp->alloc_frame(out[i], 0) < 0) {
            release_bounce(out, i);
            dst.bounce_dst.fetch_sub(bytes, std::memory_order_relaxed);
            src.bounce_src.fetch_sub(bytes, std::memory_order_relaxed);
            return bounce_rc::no_buffers;
        }
        out[i].len = uint16_t(std::min(bsz, len - i * bsz));
    }
    nbuf = n;
    charged = uint32_t(bytes);
    return bounce_rc::ok;
}

// Bounce buffers (or an uplink's UMEM frames, charged 0) go back; their
// charge leaves both quotas.
void datapath::impl::free_bounce(pool::frame* f, uint32_t n, vif_core& src, vif_core& dst, uint32_t charged) noexcept {
    release_bounce(f, n);
    if (!charged) return;
    src.bounce_src.fetch_sub(charged, std::memory_order_relaxed);
    dst.bounce_dst.fetch_sub(charged, std::memory_order_relaxed);
}

// A fallback frame that got no bounce buffers is dropped: counted on the vif
// whose quota was used up, on the receiver when the pool was dry (its
// missing RX buffers made the fallback necessary).
void datapath::impl::count_bounce_drop(bounce_rc rc, vif_core& src, vif_core& dst) noexcept {
    vif_core& c = rc == bounce_rc::src_quota ? src : dst;
    bump(c.ctr.drop_bounce_quota);
    if (c.drop_log.allow())
        ZC_LOG(info, tag, "vif%u.%u: fallback frame dropped: %s", unsigned(c.dom), c.devid,
               rc == bounce_rc::no_buffers ? "bounce pool dry"
               : rc == bounce_rc::src_quota ? "sender over its bounce quota"
                                            : "receiver over its bounce quota");
}

// Under dq's rx_lock: move a zero-copy item's bytes to bounce buffers (the
// copy itself runs later, outside the lock). Not ok: no bounce buffers for
// it (a quota or the pool); the item is unchanged.
bounce_rc datapath::impl::start_conversion(const std::shared_ptr<queue>& dqp, rx_item& it, conversion& cv) noexcept {
    queue& dq = *dqp;
    if (it.bounced || it.converting || !it.pkt) return bounce_rc::no_buffers;
    uint32_t len = 0;
    for (uint32_t i = 0; i < it.nslots; ++i) len += it.pkt->seg[i].len;
    uint32_t nbuf = 0, charged = 0;
    const bounce_rc rc = alloc_bounce(*it.src_core, *dq.core, len, cv.bounce, nbuf, charged);
    if (rc != bounce_rc::ok) return rc;
    cv.dq = dqp;
    cv.seq = it.seq;
    cv.src = it.src;
    cv.pkt = it.pkt;
    cv.src_core = it.src_core;
    cv.nslots = it.nslots;
    cv.nbuf = uint16_t(nbuf);
    cv.bounce_bytes = charged;
    cv.complete_csum = it.complete_csum;
    std::copy(cv.bounce, cv.bounce + nbuf, it.bounce);
    it.nslots = uint16_t(nbuf);
    it.bounce_bytes = charged;
    it.converting = true;
    // The item no longer pins the source: the conversion job holds the ref.
    it.src.reset();
    dq.unpin(it);
    return bounce_rc::ok;
}

// After the copy: the waiting item adopts its bounce buffers (or, when it is
// gone, the buffers go back); the source's packet reference is dropped.
void datapath::impl::finish_conversions(worker& w, std::vector<conversion>& convs) noexcept {
    for (conversion& cv : convs) {
        if (cv.complete_csum && !cv.failed) complete_bounced_checksum(cv);
        bool adopted = false;
        if (cv.dq) {
            std::lock_guard g(cv.dq->rx_lock);
            if (!cv.dq->rx_dead) {
                for (uint32_t i = 0; i < cv.dq->count; ++i) {
                    rx_item& it = cv.dq->at(i);
                    if (it.seq != cv.seq || !it.converting) continue;
                    if (cv.failed || cv.csum_failed) {
                        // The source's grant went away under us (or the
                        // checksum could not be completed): the frame is
                        // lost; leave a bounced item that the drain drops.
                        it.len = 0;
                    } else if (cv.complete_csum) {
                        // Complete now: the frontend gets no checksum flags,
                        // as Linux's after skb_checksum_help (CHECKSUM_NONE).
                        it.txflags = 0;
                        bump(cv.dq->core->ctr.csum_completed);
                    }
                    it.converting = false;
                    it.bounced = true;
                    it.pkt = nullptr;
                    adopted = true;
                    break;
                }
            }
        }
        if (cv.failed) {
            // Not adopted: the destination went away meanwhile and its
            // removal counted the frame (drop_disabled) already.
            if (adopted || !cv.dq) bump(cv.src_core->ctr.drop_copy_error);
            if (cv.src_core->copy_log.allow())
                ZC_LOG(warn, tag, "vif%u.%u: fallback copy failed", unsigned(cv.src_core->dom), cv.src_core->devid);
        } else {
            bump(cv.src_core->ctr.fallback_copies);
            if (cv.csum_failed && (adopted || !cv.dq)) bump(cv.src_core->ctr.drop_no_csum);
        }
        if (!adopted) free_bounce(cv.bounce, cv.nbuf, *cv.src_core, *cv.dq->core, cv.bounce_bytes);
        put_ref(w, cv.src, cv.pkt);
        cv.src.reset();
    }
    convs.clear();
}

// The frame's bytes are in its bounce buffers, packed (add_conversion_segments):
// complete its checksum there (offload.hpp), outside any lock.
void datapath::impl::complete_bounced_checksum(conversion& cv) noexcept {
    pool::pool& bp = *mgr->bounce();
    const uint32_t bsz = bp.buf_size();
    uint32_t len = 0;
    for (uint32_t i = 0; i < cv.nslots; ++i) len += cv.pkt->seg[i].len;
    frame_piece pieces[max_tx_slots];
    uint32_t n = 0;
    for (uint32_t off = 0; off < len && n < cv.nbuf; off += bsz, ++n)
        pieces[n] = frame_piece{bp.data(cv.bounce[n]), std::min(bsz, len - off)};
    cv.csum_failed = !complete_checksum(pieces, n);
}

void datapath::impl::release_bounce(pool::frame* f, uint32_t n) noexcept {
    // The owner: the bounce pool, or an uplink's UMEM (frames from the wire).
    for (uint32_t i = 0; i < n; ++i)
        if (f[i].kind == pool::seg_kind::local && f[i].owner) f[i].owner->release(f[i]);
}

} // namespace zc::netback
