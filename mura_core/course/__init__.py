"""The course kit: the assignment as data (``assignment``), the student edition generated
from the reference (``student``), and the grader that checks a package's pieces in child
processes (``grader``, running ``check`` against the slow ``references``)."""
