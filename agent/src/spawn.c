/*
 * spawn.c - what every child the agent starts begins with (tini's
 * spawn -> restore_signals -> exec): default signal dispositions, an empty
 * signal mask, and an environment without what only the agent uses.
 *
 * Used by `exec` (execve of CMD in place), the supervisor's child
 * (supervise.c) and the kubeconfig exec credential plugin (kubeconfig.c).
 */
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"

static const char *pass_env_list; /* --pass-env, owned by options */

void
spawn_set_pass_env(const char *list)
{
	pass_env_list = list;
}

/* Async-signal-safe: callable between fork and exec of a threaded serve. */
void
spawn_restore_signals(void)
{
	struct sigaction sa;
	sigset_t none;
	int s;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	for (s = 1; s < NSIG; s++) {
		if (s == SIGKILL || s == SIGSTOP)
			continue;
		if (sigaction(s, &sa, NULL) == 0)
			continue;
		/*
		 * glibc refuses its own real-time signals (32, 33), but an
		 * ignored disposition of them, inherited from our parent,
		 * survives exec all the same: reset them with the raw system
		 * call (kernel struct: handler, flags, restorer, mask).
		 */
		{
			struct {
				void *h;
				unsigned long fl;
				void *r;
				unsigned long m;
			} k = {SIG_DFL, 0, NULL, 0};

			(void)syscall(
			    SYS_rt_sigaction, s, &k, NULL, sizeof(k.m));
		}
	}
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
}

/* NAME of a NAME=value entry is in the comma list. */
static bool
listed(const char *entry, size_t namelen, const char *list)
{
	const char *p = list, *c;
	size_t n;

	while (p != NULL && *p != '\0') {
		c = strchr(p, ',');
		n = c ? (size_t)(c - p) : strlen(p);
		while (n > 0 && p[0] == ' ')
			p++, n--;
		while (n > 0 && p[n - 1] == ' ')
			n--;
		if (n == namelen && strncmp(entry, p, n) == 0)
			return true;
		p = c ? c + 1 : NULL;
	}
	return false;
}

bool
spawn_env_removed(const char *entry, const char *pass_env)
{
	const char *eq = strchr(entry, '=');
	size_t n = eq ? (size_t)(eq - entry) : strlen(entry);

	if (listed(entry, n, pass_env))
		return false;
	if (n >= 12 && strncmp(entry, "PYLON_AGENT_", 12) == 0)
		return true;
	return platform_secret_env(entry, n); /* FLY_API_TOKEN, ... */
}

char **
spawn_child_env(void)
{
	extern char **environ;
	char **envp;
	size_t n = 0, k = 0;

	while (environ[n] != NULL)
		n++;
	if ((envp = a_calloc(n + 1, sizeof(*envp))) == NULL)
		return NULL;
	for (n = 0; environ[n] != NULL; n++)
		if (!spawn_env_removed(environ[n], pass_env_list))
			envp[k++] = environ[n];
	envp[k] = NULL;
	return envp;
}
