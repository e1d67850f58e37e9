pub use maetok_nn as nn; pub use maetok_tokenizer as tokenizer;
