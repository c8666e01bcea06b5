// The system calls of the POSIX platform, routed through one macro so tests can inject failures.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(FASTENERS_MOCK_SYSCALLS)
#include "posix_mock.hpp"  // From tests/posix/: the same calls, with failures a test asked for.
#define FASTENERS_SYSCALL(name) ::fasteners::mock::name
#else
#define FASTENERS_SYSCALL(name) ::name
#endif
