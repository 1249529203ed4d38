"""Teachers: frozen speech encoders with one contract, ``forward(wavs, wav_lens) -> TeacherOutput``.

See :mod:`speechkd.teachers.base` for the contract, :func:`load_teacher` to load one, and
:mod:`speechkd.teachers.ct2_convert` to turn a CTranslate2 Whisper model into a transformers checkpoint.
"""

from speechkd.teachers.base import TEACHER_KINDS, Teacher, TeacherOutput, load_teacher

__all__ = ["TEACHER_KINDS", "Teacher", "TeacherOutput", "load_teacher"]
