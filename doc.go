// Atopacctd copies the kernel's process accounting records into
// size-limited shadow files for atop and other clients: a drop-in, hardened
// replacement for the atopacctd that ships with atop.
//
// Usage:
//
//	atopacctd [-v | topdirectory]
//	atopacctd [options] [topdirectory]
//	atopacctd -s [topdirectory]
//
// It switches process accounting on into TOPDIRECTORY/pacct_source (default
// top directory /run), learns of process exits from the netlink proc
// connector, copies every record into TOPDIRECTORY/pacct_shadow.d, lets
// clients register through System V semaphores 1071979 and 1071980, removes
// shadow files no client reads any more and keeps the source file bounded.
// Once its privileged resources are acquired it keeps CAP_SYS_PACCT alone,
// under no_new_privs, Landlock and a seccomp allow-list.
//
// The options, exit codes and signals are in atopacctd -h and atopacctd(8);
// the contract with clients is docs/PROTOCOL.md.
package main
