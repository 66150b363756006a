// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The C++ side of tests/consumer.c: both public headers included from C++11
// (-pedantic -Werror), the functions linked with C linkage, the options
// macro and the structs usable from C++.  Built and run by
// tests/check-install.sh against the installed library; needs no /dev/kvm.
//
//   consumer-cpp [<expected version>]
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <gmfp.h>
#include <gmfp_wire.h>

static_assert(sizeof(struct gmfp_event) == 48, "notification record size");
static_assert(GMFP_WIRE_HDR_SIZE == 16, "wire header size");

namespace {

int checks, failures;

void check(bool ok, const char *what, int line)
{
	checks++;
	if (!ok) {
		failures++;
		std::fprintf(stderr, "consumer.cpp:%d: check failed: %s\n", line, what);
	}
}

#define CHECK(cond) check(static_cast<bool>(cond), #cond, __LINE__)

// RAII holders, as a C++ VMM would write them.
struct source_deleter {
	void operator()(gmfp_source *s) const { gmfp_source_destroy(s); }
};

struct engine_holder {
	gmfp_engine *e = nullptr;
	engine_holder() = default;
	engine_holder(const engine_holder &) = delete;
	engine_holder &operator=(const engine_holder &) = delete;
	~engine_holder() { if (e) gmfp_engine_destroy(e); }
};

void test_library(const char *expected)
{
	std::string v = gmfp_version();
	std::string prefix = std::to_string(GMFP_VERSION_MAJOR) + "." +
			     std::to_string(GMFP_VERSION_MINOR) + ".";

	CHECK(v.compare(0, prefix.size(), prefix) == 0);
	if (expected)
		CHECK(v == expected);

	CHECK(gmfp_gmem_mark(-1, 0, GMFP_PAGE_SIZE) == -EBADF);
	CHECK(gmfp_engine_new(nullptr, nullptr, nullptr) == -EINVAL);
}

void test_engine()
{
	gmfp_source *raw = nullptr;

	CHECK(gmfp_source_zero(&raw) == 0);
	if (!raw)
		return;
	// the source must outlive the engine: declared first, destroyed last
	std::unique_ptr<gmfp_source, source_deleter> src(raw);
	{
		GMFP_OPTS_INIT(struct gmfp_engine_opts, opts);
		opts.workers = 1;
		opts.bg_order = GMFP_BG_AROUND_DEMAND;
		opts.flags = GMFP_ENGINE_MARK_ZERO;

		engine_holder h;
		CHECK(gmfp_engine_new(&h.e, src.get(), &opts) == 0);
		CHECK(h.e != nullptr);
		if (h.e) {
			GMFP_OPTS_INIT(struct gmfp_engine_stats, st);
			CHECK(gmfp_engine_get_stats(h.e, &st) == 0);
			CHECK(st.pages_present == 0);

			int n = gmfp_engine_stats_json(h.e, nullptr, 0);
			CHECK(n > 2);
			if (n > 0) {
				std::vector<char> buf(static_cast<size_t>(n) + 1);
				CHECK(gmfp_engine_stats_json(h.e, buf.data(), buf.size()) == n);
				CHECK(buf[0] == '{' && buf[static_cast<size_t>(n) - 1] == '}');
			}
		}
	}
}

void test_wire()
{
	std::vector<unsigned char> buf(GMFP_WIRE_HDR_SIZE + 64);
	gmfp_wire_msg m;
	std::memset(&m, 0, sizeof(m));

	ssize_t n = gmfp_wire_encode_req(buf.data(), buf.size(), 7, 3, 1ull << 20, 64);
	CHECK(n == GMFP_WIRE_HDR_SIZE + 16);
	if (n > 0) {
		CHECK(gmfp_wire_decode(buf.data(), static_cast<size_t>(n), &m) == n);
		CHECK(m.type == GMFP_WIRE_REQ);
		CHECK(m.seq == 7);
		CHECK(m.u.req.region == 3);
		CHECK(m.u.req.pgoff == 1ull << 20);
		CHECK(m.u.req.npages == 64);
	}

	n = gmfp_wire_encode_error(buf.data(), buf.size(), 8, 3, 5, 1, EIO);
	CHECK(n > GMFP_WIRE_HDR_SIZE);
	if (n > 0) {
		CHECK(gmfp_wire_decode(buf.data(), static_cast<size_t>(n), &m) == n);
		CHECK(m.type == GMFP_WIRE_ERROR);
		CHECK(m.seq == 8);
		CHECK(m.u.error.pgoff == 5);
		CHECK(m.u.error.err == EIO);
	}
}

} // namespace

int main(int argc, char **argv)
{
	if (argc > 2) {
		std::fprintf(stderr, "usage: %s [<expected version>]\n", argv[0]);
		return 2;
	}
	test_library(argc > 1 ? argv[1] : nullptr);
	test_engine();
	test_wire();
	std::printf("consumer (C++, libgmfp %s): %d checks, %d failed\n", gmfp_version(),
		    checks, failures);
	return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
