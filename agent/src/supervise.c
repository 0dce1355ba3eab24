/*
 * supervise.c - start CMD, forward signals, reap zombies (tini's order).
 *
 * serve blocks the signals it cares about in every thread and collects
 * them with sigtimedwait in the main thread (serve.c); this file holds the
 * process mechanics: the child's exec with a clean signal state, reaping
 * (the agent may be PID 1 or a subreaper, so orphans of CMD land here),
 * and the exit status rule (CMD's code, 128 + signal when killed).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "serve.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static const int forwarded[] = {
    SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

void
supervise_block_signals(sigset_t *set)
{
	struct sigaction sa;
	size_t i;

	sigemptyset(set);
	for (i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(set, forwarded[i]);
	sigaddset(set, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, set, NULL);

	/* Writes to a closed peer (HTTP client, Redis) must be errors. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGPIPE, &sa, NULL);
}

void
supervise_subreaper(void)
{
	if (getpid() == 1)
		return;
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == -1)
		log_warn("cannot become a child subreaper; orphans of the "
		         "command are reaped by PID 1 instead");
}

int
supervise_fd_floor(void)
{
	DIR *d;
	struct dirent *de;
	int max = 2, fd, self;

	if ((d = opendir("/proc/self/fd")) == NULL)
		return 3;
	self = dirfd(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		fd = atoi(de->d_name);
		if (fd != self && fd > max)
			max = fd;
	}
	closedir(d);
	return max + 1;
}

/* Async-signal-safe helpers for the child between fork and exec. */
static size_t
safe_strlen(const char *s)
{
	size_t n = 0;

	while (s[n] != '\0')
		n++;
	return n;
}

static void
safe_write(const char *s)
{
	ssize_t r;
	size_t n = safe_strlen(s);

	while (n > 0) {
		r = write(STDERR_FILENO, s, n);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return;
		}
		s += r;
		n -= (size_t)r;
	}
}

static void
safe_write_int(int v)
{
	char buf[16];
	int i = (int)sizeof(buf) - 1;

	buf[i] = '\0';
	if (v < 0)
		v = -v;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0 && i > 0);
	safe_write(buf + i);
}

static void
child_exec(char *const argv[], char *const envp[], int fd_floor)
{
	int e;

	/* A clean signal state: nothing blocked, every disposition default
	 * (SIGPIPE was ignored here and ignoring survives exec). */
	spawn_restore_signals();

	/* The agent's sockets (Redis, HTTP) are not the command's. */
	if (syscall(SYS_close_range, (unsigned)fd_floor, ~0U,
	        CLOSE_RANGE_CLOEXEC) == -1) {
		long fd, max = sysconf(_SC_OPEN_MAX);

		if (max < 0 || max > 65536)
			max = 65536;
		for (fd = fd_floor; fd < max; fd++)
			(void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
	}

	execvpe(argv[0], argv, envp);
	e = errno;
	safe_write("pylon-agent: cannot run \"");
	safe_write(argv[0]);
	if (e == ENOENT)
		safe_write("\": not found on PATH or no such file; check the "
		           "command after --\n");
	else if (e == EACCES)
		safe_write("\": permission denied (not executable?)\n");
	else {
		safe_write("\": exec failed, errno ");
		safe_write_int(e);
		safe_write("\n");
	}
	_exit(e == ENOENT ? 127 : 126);
}

pid_t
supervise_spawn(char *const argv[], int fd_floor, struct agent_err *err)
{
	pid_t pid;
	char **envp;

	if (argv == NULL || argv[0] == NULL) {
		err_set(err, EXIT_AGENT_USAGE, "serve: no command after --");
		return -1;
	}
	/* Built before fork: the child of a threaded process may only make
	 * async-signal-safe calls. */
	if ((envp = spawn_child_env()) == NULL) {
		err_oom(err, "serve: the command's environment");
		return -1;
	}
	pid = fork();
	if (pid == -1) {
		err_set(err, EXIT_AGENT_SOFTWARE,
		    "serve: cannot start \"%s\": "
		    "fork: %s",
		    argv[0], strerror(errno));
		a_free(envp);
		return -1;
	}
	if (pid == 0)
		child_exec(argv, envp, fd_floor);
	a_free(envp);
	return pid;
}

bool
supervise_reap(pid_t child, int *wstatus)
{
	pid_t pid;
	int st;
	bool found = false;

	for (;;) {
		pid = waitpid(-1, &st, WNOHANG);
		if (pid == -1 && errno == EINTR)
			continue;
		if (pid <= 0)
			break;
		if (child > 0 && pid == child) {
			*wstatus = st;
			found = true;
		} else
			log_debug("reaped orphan pid %d", (int)pid);
	}
	return found;
}

int
supervise_exit_code(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return EXIT_AGENT_SOFTWARE;
}

void
supervise_forward(pid_t child, int sig)
{
	if (child <= 0)
		return;
	if (kill(child, sig) == -1 && errno != ESRCH)
		log_warn("cannot forward signal %d to pid %d", sig, (int)child);
}
