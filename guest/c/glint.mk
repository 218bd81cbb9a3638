# The compiler and linker flags of a glint C guest (docs/ABI.md, Appendix A).
#
# A C guest project's Makefile includes this file; glint's own build (guest/artifacts/build.rs)
# reads the same three lists from it, so both build guests the same way. gcc and clang take them.
#
# -ffreestanding -nostdlib    no libc: glint.c brings what the program needs
# -fno-stack-protector        the canary lives at %fs:0x28, and glint gives a guest no TLS
# -fcf-protection=none        no endbr64 or property notes: nothing here checks them
# -fstack-clash-protection    the stack has one 4 KiB guard page; probe larger frames page by page
# -march=x86-64               baseline SSE2 only: AVX faults under hardware KVM (CR4.OSXSAVE clear)
# -fno-pie, -static           an ET_EXEC linked at the image base, 0x200000, without relocations
# -z noexecstack              an executable stack (PT_GNU_STACK with PF_X) is refused
# -z max-page-size=4096       segments aligned to pages, not 2 MiB
# -lgcc                       the compiler's helpers (128-bit division and the like), if called
GLINT_CFLAGS = -std=gnu11 -O2 -g -Wall -Wextra -ffreestanding -fno-stack-protector \
	-fcf-protection=none -fstack-clash-protection -march=x86-64 -mtune=generic -fno-pie
GLINT_LDFLAGS = -nostdlib -static -Wl,-Ttext-segment=0x200000 -Wl,-z,noexecstack \
	-Wl,-z,max-page-size=4096 -Wl,--build-id=none
GLINT_LDLIBS = -lgcc
