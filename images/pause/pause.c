/*
 * pause: the process that holds a pod sandbox's namespaces open.
 *
 * It does nothing but wait. SIGINT or SIGTERM ends it with status 0; SIGCHLD
 * reaps every exited child, so that as PID 1 of a shared PID namespace it
 * leaves no zombies behind. Built statically so that its image needs no libc.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal_number)
{
	(void)signal_number;
	_exit(0);
}

static void reap(int signal_number)
{
	int saved_errno = errno;

	(void)signal_number;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved_errno;
}

static int handle(int signal_number, void (*handler)(int))
{
	struct sigaction action;

	memset(&action, 0, sizeof(action));
	action.sa_handler = handler;
	action.sa_flags = SA_RESTART | (signal_number == SIGCHLD ? SA_NOCLDSTOP : 0);
	sigemptyset(&action.sa_mask);
	return sigaction(signal_number, &action, NULL);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("pause (blacklist-operator) 3.10");
		return 0;
	}
	if (getpid() != 1)
		fputs("pause: not running as PID 1; children of other processes are not reaped\n",
		      stderr);
	if (handle(SIGINT, stop) != 0 || handle(SIGTERM, stop) != 0 ||
	    handle(SIGCHLD, reap) != 0) {
		perror("pause: sigaction");
		return 1;
	}
	for (;;)
		pause();
}
