// The umbrella header: everything the fasteners library offers.
#pragma once

#include "fasteners/async.hpp"
#include "fasteners/holders.hpp"
#include "fasteners/interprocess_lock.hpp"
#include "fasteners/interprocess_reader_writer_lock.hpp"
#include "fasteners/interprocess_semaphore.hpp"
#include "fasteners/lock_options.hpp"
#include "fasteners/locked.hpp"
#include "fasteners/timeout.hpp"
#include "fasteners/version.hpp"
