// FASTENERS_API marks the symbols a shared build of the library exports.
#pragma once

#if defined(FASTENERS_SHARED)
#if defined(_WIN32)
#if defined(FASTENERS_BUILDING_SHARED)
#define FASTENERS_API __declspec(dllexport)
#else
#define FASTENERS_API __declspec(dllimport)
#endif
#else
#define FASTENERS_API __attribute__((visibility("default")))
#endif
#else
#define FASTENERS_API
#endif
