import os

from batchmask.sources import scan


def test_scan_finds_images_in_any_case_and_flags_non_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.JPG").write_bytes(b"1")
    (tmp_path / "a" / "y.TiFf").write_bytes(b"1")
    (tmp_path / "a" / "notes.txt").write_text("no")
    (tmp_path / "dir.jpg").mkdir()  # a folder with an image name is a folder
    (tmp_path / "dir.jpg" / "z.png").write_bytes(b"1")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "dangling.jpg")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a directory link loop is not followed
    os.symlink(tmp_path / "self.jpg", tmp_path / "self.jpg")  # a file link loop
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "phone.HEIC").write_bytes(b"1")  # no decoder, but a photo: it gets a row saying so
    (tmp_path / "old.jfif").write_bytes(b"1")
    found = {f.rel: f for f in scan(tmp_path)}
    assert set(found) == {"a/x.JPG", "a/y.TiFf", "dir.jpg/z.png", "dangling.jpg", "self.jpg", "pipe.png", "phone.HEIC", "old.jfif"}
    assert found["dangling.jpg"].problem == "broken symbolic link"
    assert found["self.jpg"].problem == "symbolic link loop"
    assert found["pipe.png"].problem.startswith("not a regular file")
    assert found["a/x.JPG"].problem == "" and found["a/x.JPG"].size == 1


def test_excluded_output_folder_is_not_scanned(tmp_path):
    (tmp_path / "out" / "annotated").mkdir(parents=True)
    (tmp_path / "out" / "annotated" / "p.jpg").write_bytes(b"1")
    (tmp_path / "p.jpg").write_bytes(b"1")
    assert [f.rel for f in scan(tmp_path, exclude=[tmp_path / "out"])] == ["p.jpg"]
