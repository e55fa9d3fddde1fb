"""The reliability suite's library (no pytest, no QEMU needed to import it).

  dmlog        dm-log-writes logs (QEMU's blklogwrites driver): parse, and write synthetic ones
  crashstates  crash states of a logged operation: epochs between flushes, the bounded set of
               persisted subsets, the image bytes of each
  invariants   what must hold of an image after a crash or a failed operation (pure: takes
               what was observed, returns the problems)
  observe      runs qemu-img (patched and Debian's 7.2) and the independent reader on an image
  scenario     the pre-operation image and the write paths (qemu-img snapshot -c/-a/-d, check,
               and the same in qemu-system)
  blkdebug     blkdebug rule files: an error at the N-th write or flush, or at a qcow2 event
  vmkill       qemu-system without a guest (the VM class, on the rig's QMP client): savevm /
               snapshot-save, killed with SIGKILL
  vmops        the VM paths (HMP savevm/loadvm/delvm, QMP snapshot-save/-load/-delete) on
               blklogwrites or blkdebug, the runstate after them, loadvm of crash states
  fuzzimage    snapshot tables and current records, as data, written into an image
  summary      out/results/reliability.json, merged from each test's part
"""
