// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * tcp_proxy LISTEN_PORT TARGET_PORT: forward every TCP connection accepted on
 * 127.0.0.1:LISTEN_PORT to a new connection to 127.0.0.1:TARGET_PORT, both
 * ways, until either end closes.  Several connections at once (postcopy
 * preempt opens a second channel).  Prints "tcp_proxy: listening on PORT"
 * once it accepts and, on SIGUSR1 or at exit, the connections and bytes it
 * forwarded, on stdout.  qemu/tests/vm/postcopy.sh puts it between the two
 * QEMUs and SIGKILLs it to break the migration connection: the kernel then
 * closes every socket, and each QEMU sees its own end fail.
 * Exit 0 when killed by SIGTERM, 1 on error, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONN 8
#define BUF 65536

struct conn {
	int fd[2];		/* accepted, outgoing */
	int shut[2];		/* fd[i] has sent EOF: no more reads from it */
};

static volatile sig_atomic_t stop, report;
static unsigned long long total[2];	/* forwarded, all connections */

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		report = 1;
	else
		stop = 1;
}

static int parse_port(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > 65535)
		return -1;
	return (int)v;
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static void close_conn(struct conn *c)
{
	close(c->fd[0]);
	close(c->fd[1]);
	c->fd[0] = c->fd[1] = -1;
}

static void print_report(int n, unsigned long nconn)
{
	printf("tcp_proxy: %lu connections, %d open, %llu bytes forward, %llu back\n",
	       nconn, n, total[0], total[1]);
	fflush(stdout);
}

/*
 * Move what fd[from] has to fd[!from]; on EOF pass the EOF on.  Returns 0,
 * or -1 if the connection is finished (both directions ended, or an error).
 */
static int pump(struct conn *c, int from, char *buf)
{
	ssize_t n, off = 0;

	n = read(c->fd[from], buf, BUF);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	if (n == 0) {
		c->shut[from] = 1;
		shutdown(c->fd[!from], SHUT_WR);
		return c->shut[!from] ? -1 : 0;
	}
	while (off < n) {
		ssize_t w = write(c->fd[!from], buf + off, n - off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		off += w;
	}
	total[from] += n;
	return 0;
}

int main(int argc, char **argv)
{
	struct conn conns[MAX_CONN];
	struct pollfd pfd[1 + 2 * MAX_CONN];
	struct sigaction sa;
	struct sockaddr_in a;
	unsigned long nconn = 0;
	int lport, tport, lfd, n = 0, one = 1, i;
	char *buf;

	if (argc != 3 || (lport = parse_port(argv[1])) < 0 ||
	    (tport = parse_port(argv[2])) < 0) {
		fprintf(stderr, "usage: tcp_proxy LISTEN_PORT TARGET_PORT (1-65535)\n");
		return 2;
	}
	buf = malloc(BUF);
	if (!buf) {
		perror("tcp_proxy: malloc");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		perror("tcp_proxy: socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a = loopback(lport);
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 8)) {
		fprintf(stderr, "tcp_proxy: 127.0.0.1:%d: %s\n", lport, strerror(errno));
		return 1;
	}
	printf("tcp_proxy: listening on %d, forwarding to %d\n", lport, tport);
	fflush(stdout);

	while (!stop) {
		int np = 1;

		if (report) {
			report = 0;
			print_report(n, nconn);
		}
		pfd[0].fd = n < MAX_CONN ? lfd : -1;
		pfd[0].events = POLLIN;
		for (i = 0; i < n; i++) {
			pfd[np].fd = conns[i].shut[0] ? -1 : conns[i].fd[0];
			pfd[np++].events = POLLIN;
			pfd[np].fd = conns[i].shut[1] ? -1 : conns[i].fd[1];
			pfd[np++].events = POLLIN;
		}
		if (poll(pfd, np, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("tcp_proxy: poll");
			return 1;
		}
		/* Serve the open connections first: pfd[] matches conns[] now. */
		for (i = n - 1; i >= 0; i--) {
			int j, done = 0;

			for (j = 0; j < 2 && !done; j++)
				if (pfd[1 + 2 * i + j].revents &&
				    pump(&conns[i], j, buf))
					done = 1;
			if (done) {
				close_conn(&conns[i]);
				conns[i] = conns[--n];
			}
		}
		if (pfd[0].revents & POLLIN) {
			struct conn *c = &conns[n];
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			int out;

			if (fd < 0)
				continue;
			out = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			a = loopback(tport);
			if (out < 0 || connect(out, (struct sockaddr *)&a, sizeof(a))) {
				fprintf(stderr, "tcp_proxy: connect to %d: %s\n", tport,
					strerror(errno));
				if (out >= 0)
					close(out);
				close(fd);
				continue;
			}
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			setsockopt(out, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			memset(c, 0, sizeof(*c));
			c->fd[0] = fd;
			c->fd[1] = out;
			n++;
			nconn++;
		}
	}
	print_report(n, nconn);
	return 0;
}
