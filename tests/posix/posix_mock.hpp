// Stand-ins for the POSIX platform's system calls that fail on request (see
// src/posix/syscalls.hpp).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace fasteners::mock {

enum class call { fcntl_lock, open, close };

// Makes the next calls of `c` fail with these errno values, one call each, in order; later calls
// go to the real system call. Only fcntl calls that set a lock or unlock count as fcntl_lock.
void fail_next(call c, std::vector<int> errors);
// How often `c` was called since the last reset().
int calls(call c);
// Forgets the failures still queued and the counts, and lets blocked opens go (unblock_open).
void reset();

// Makes open() of exactly `path` wait, inside the call, until unblock_open() or reset(); a
// blocked call goes on by itself after 60 s, so a broken test cannot hang for good.
void block_open(const std::string& path);
// Lets the opens that block_open() holds go on, and later ones pass.
void unblock_open();
// How many calls wait in a blocked open() now.
int blocked_opens();

int fcntl(int fd, int cmd, struct flock* fl);
int open(const char* path, int flags, mode_t mode = 0);
int close(int fd);
int fstat(int fd, struct stat* st);
int stat(const char* path, struct stat* st);
int lstat(const char* path, struct stat* st);
int unlink(const char* path);

}  // namespace fasteners::mock
