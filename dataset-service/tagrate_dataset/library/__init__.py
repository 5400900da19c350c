"""The library (LibraryService): a user's listing of the stored images
(GetUserData), an image's neighbours in it, and the SQL that serves them."""
